-- purpose: documents that pass the Gopher quality, Gopher repetition, C4 and FineWeb rules (datatrove's filters, FineWeb's settings) on the `quality` annotation
-- depends: filter_quality_checks
-- params: docs := 'documents'; missing := 'error' | 'exclude' | 'keep'; rules := ['gopher_quality', 'gopher_repetition', 'c4', 'fineweb']; Gopher quality: min_doc_words := 50, max_doc_words := 100000, min_avg_word_length := 3, max_avg_word_length := 10, max_symbol_word_ratio := 0.1, max_bullet_lines_ratio := 0.9, max_ellipsis_lines_ratio := 0.3, min_alpha_words_ratio := 0.8, min_stop_words := 2; Gopher repetition: dup_line_frac := 0.3, dup_para_frac := 0.3, dup_line_char_frac := 0.2, dup_para_char_frac := 0.2, top_2gram_frac := 0.2, top_3gram_frac := 0.18, top_4gram_frac := 0.16, dup_5gram_frac := 0.15, dup_6gram_frac := 0.14, dup_7gram_frac := 0.13, dup_8gram_frac := 0.12, dup_9gram_frac := 0.11, dup_10gram_frac := 0.1; C4: c4_terminal_punct := false, min_sentences := 5, drop_lorem_ipsum := true, drop_curly_bracket := true; FineWeb: line_punct_thr := 0.12, line_punct_exclude_zero := false, short_line_thr := 0.67, char_duplicates_ratio := 0.01, new_line_ratio := 0.3
-- The defaults are datatrove's, as FineWeb's pipeline runs them: GopherRepetitionFilter(),
-- GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False) and
-- FineWebQualityFilter(); c4_terminal_punct := true counts only lines ending in terminal
-- punctuation, as C4 itself does. Each rule keeps a document where datatrove's filter keeps it
-- (`corpusdb annotate DB quality` computes the same numbers; tests/test_quality.py checks them),
-- except that no rule edits the text: each reads the document as stored. FineWeb's pipeline is a
-- chain, whose C4 step removes lines (too few words, javascript, policy) and citations before
-- the FineWeb rules read the text: chain := true reads the FineWeb rules' values on that text
-- (fineweb_chain_*), and the four rules then keep what datatrove's chain keeps. A threshold of NULL
-- switches its rule off (0 is a threshold, unlike datatrove where 0 also switches it off); a
-- NULL value (an empty document, no words) fails its rule, as datatrove drops such documents.
-- Every row of `docs` needs a quality row: documents ingested after the annotator ran (or while
-- it runs: a registered annotation without rows yet) are an error naming the fix, unless
-- missing := 'exclude' (dropped) or 'keep' (kept unjudged). Over instances (docs :=
-- 'instances') each instance is judged by its document.
create or replace macro filter_quality(
    docs := 'documents',
    missing := 'error',
    rules := ['gopher_quality', 'gopher_repetition', 'c4', 'fineweb'],
    min_doc_words := 50, max_doc_words := 100000, min_avg_word_length := 3, max_avg_word_length := 10,
    max_symbol_word_ratio := 0.1, max_bullet_lines_ratio := 0.9, max_ellipsis_lines_ratio := 0.3,
    min_alpha_words_ratio := 0.8, min_stop_words := 2,
    dup_line_frac := 0.3, dup_para_frac := 0.3, dup_line_char_frac := 0.2, dup_para_char_frac := 0.2,
    top_2gram_frac := 0.2, top_3gram_frac := 0.18, top_4gram_frac := 0.16,
    dup_5gram_frac := 0.15, dup_6gram_frac := 0.14, dup_7gram_frac := 0.13, dup_8gram_frac := 0.12,
    dup_9gram_frac := 0.11, dup_10gram_frac := 0.1,
    c4_terminal_punct := false, min_sentences := 5, drop_lorem_ipsum := true, drop_curly_bracket := true,
    line_punct_thr := 0.12, line_punct_exclude_zero := false, short_line_thr := 0.67, char_duplicates_ratio := 0.01,
    new_line_ratio := 0.3, chain := false
) as table
with unjudged as (
    -- keys alone: how many rows of docs have no quality row
    select count(*) filter (where a.doc_id is null) as n_missing, count(*) as n_units
    from (select doc_id from query_table(docs)) as d
    left join (select doc_id from annotations_quality) as a on d.doc_id = a.doc_id
),

checks as (
    select
        filter_quality_checks(rules, chain, c4_terminal_punct, missing, unjudged.n_missing, unjudged.n_units, docs) as ok,
        list_contains(rules, 'gopher_quality') as gopher_quality,
        list_contains(rules, 'gopher_repetition') as gopher_repetition,
        list_contains(rules, 'c4') as c4,
        list_contains(rules, 'fineweb') as fineweb
    from unjudged
),

chained as (
    -- the chain's columns where the annotation has them (NULL in one made before they existed: `checks` refuses
    -- chain := true then)
    select
        *,
        try_cast(struct_pack(*columns('^(doc_id|fineweb_chain_(line_punct|short_line|char_dup|list)_ratio)$')) as struct(
            doc_id bigint, fineweb_chain_line_punct_ratio double, fineweb_chain_short_line_ratio double,
            fineweb_chain_char_dup_ratio double, fineweb_chain_list_ratio double
        )) as chain_values
    from annotations_quality
),

fineweb_values as (
    select
        c.* exclude (chain_values),
        case when chain then struct_pack(
            line_punct := c.chain_values.fineweb_chain_line_punct_ratio,
            short_line := c.chain_values.fineweb_chain_short_line_ratio,
            char_dup := c.chain_values.fineweb_chain_char_dup_ratio,
            list := c.chain_values.fineweb_chain_list_ratio
        ) else struct_pack(
            line_punct := c.fineweb_line_punct_ratio, short_line := c.fineweb_short_line_ratio,
            char_dup := c.fineweb_char_dup_ratio, list := c.fineweb_list_ratio
        ) end as fw
    from chained as c
),

judged as (
    select
        d.*,
        q.doc_id is null as unannotated,
        -- Gopher quality: fail where datatrove's GopherQualityFilter fails
        coalesce(
            (min_doc_words is null or q.gopher_words >= min_doc_words)
            and (max_doc_words is null or q.gopher_words <= max_doc_words)
            and (min_avg_word_length is null or q.gopher_mean_word_length >= min_avg_word_length)
            and (max_avg_word_length is null or q.gopher_mean_word_length <= max_avg_word_length)
            and (max_symbol_word_ratio is null or (q.gopher_hash_ratio <= max_symbol_word_ratio
                                                   and q.gopher_ellipsis_ratio <= max_symbol_word_ratio))
            and (max_bullet_lines_ratio is null or q.gopher_bullet_lines_ratio <= max_bullet_lines_ratio)
            and (max_ellipsis_lines_ratio is null or q.gopher_ellipsis_lines_ratio <= max_ellipsis_lines_ratio)
            and (min_alpha_words_ratio is null or q.gopher_alpha_words_ratio >= min_alpha_words_ratio)
            and (min_stop_words is null or q.gopher_stop_words >= min_stop_words),
            false
        ) as pass_gopher_quality,
        -- Gopher repetition: GopherRepetitionFilter
        coalesce(
            (dup_para_frac is null or q.gopher_dup_para_frac <= dup_para_frac)
            and (dup_para_char_frac is null or q.gopher_dup_para_char_frac <= dup_para_char_frac)
            and (dup_line_frac is null or q.gopher_dup_line_frac <= dup_line_frac)
            and (dup_line_char_frac is null or q.gopher_dup_line_char_frac <= dup_line_char_frac)
            and (top_2gram_frac is null or q.gopher_top_2gram_frac <= top_2gram_frac)
            and (top_3gram_frac is null or q.gopher_top_3gram_frac <= top_3gram_frac)
            and (top_4gram_frac is null or q.gopher_top_4gram_frac <= top_4gram_frac)
            and (dup_5gram_frac is null or q.gopher_dup_5gram_frac <= dup_5gram_frac)
            and (dup_6gram_frac is null or q.gopher_dup_6gram_frac <= dup_6gram_frac)
            and (dup_7gram_frac is null or q.gopher_dup_7gram_frac <= dup_7gram_frac)
            and (dup_8gram_frac is null or q.gopher_dup_8gram_frac <= dup_8gram_frac)
            and (dup_9gram_frac is null or q.gopher_dup_9gram_frac <= dup_9gram_frac)
            and (dup_10gram_frac is null or q.gopher_dup_10gram_frac <= dup_10gram_frac),
            false
        ) as pass_gopher_repetition,
        -- C4: C4QualityFilter's page rules over the lines its line rules keep
        coalesce(
            case
                when c4_terminal_punct then
                    (min_sentences is null or q.c4_sentences >= min_sentences)
                    and not (coalesce(drop_lorem_ipsum, false) and q.c4_lorem_ipsum)
                    and not (coalesce(drop_curly_bracket, false) and q.c4_curly_bracket)
                else
                    (min_sentences is null or q.c4_any_end_sentences >= min_sentences)
                    and not (coalesce(drop_lorem_ipsum, false) and q.c4_any_end_lorem_ipsum)
                    and not (coalesce(drop_curly_bracket, false) and q.c4_any_end_curly_bracket)
            end,
            false
        ) as pass_c4,
        -- FineWeb: FineWebQualityFilter, on the stored text or (chain) on the text C4's step leaves
        coalesce(
            (line_punct_thr is null or q.fw.line_punct >= line_punct_thr
             or (coalesce(line_punct_exclude_zero, false) and q.fw.line_punct = 0))
            and (short_line_thr is null or q.fw.short_line <= short_line_thr)
            and (char_duplicates_ratio is null or q.fw.char_dup <= char_duplicates_ratio)
            and (new_line_ratio is null or q.fw.list <= new_line_ratio),
            false
        ) as pass_fineweb
    from query_table(docs) as d
    left join fineweb_values as q on d.doc_id = q.doc_id
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves the join empty
    -- (an annotation registered without rows yet)
    select judged.* exclude (unannotated, pass_gopher_quality, pass_gopher_repetition, pass_c4, pass_fineweb)
    from judged, checks
    where
        checks.ok
        and (
            (unannotated and missing = 'keep')
            or (
                not unannotated
                and (not checks.gopher_quality or pass_gopher_quality)
                and (not checks.gopher_repetition or pass_gopher_repetition)
                and (not checks.c4 or pass_c4)
                and (not checks.fineweb or pass_fineweb)
            )
        )
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
