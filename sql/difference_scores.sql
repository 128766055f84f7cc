-- purpose: MiniPLM's difference score per document: how much more likely the teacher finds it than the reference
-- depends: require, require_unit, scored_models, unit_key
-- params: teacher, reference (score names); per := 'byte' | 'token'; docs := 'documents' (any table or view with doc_id; 'instances' or a view over them for instance scores)
-- score = (log p_teacher(x) - log p_ref(x)) / n_bytes: log-likelihoods of the whole text, so the
-- difference is comparable across tokenizers. per := 'token' uses each model's own per-token
-- log-likelihood instead (only meaningful when both share a tokenizer). Documents missing either
-- score, or with a NULL one (empty text), or with no bytes or tokens to divide by, get no row.
-- A score name without scores, an unknown `per`, or per := 'token' across two tokenizers (the
-- `models` view knows each model's tokenizer) is an error, as are two models scored on different
-- units, or docs of another unit than the models' (documents vs instances: see `unit_key`).
-- Rows carry unit_id (the key scores joined on) for the policies built on this one.
create or replace macro difference_scores(teacher, reference, per := 'byte', docs := 'documents') as table
with checks as (
    select
        require(
            exists (select 1 from scores where scores.model = teacher),
            'difference: no scores named ''' || teacher || '''; scored models: ' || scored_models()
        )
        and require(
            exists (select 1 from scores where scores.model = reference),
            'difference: no scores named ''' || reference || '''; scored models: ' || scored_models()
        )
        and require(
            per in ('byte', 'token'), 'difference: per must be ''byte'' or ''token'', not ''' || per || ''''
        )
        and require(
            per = 'byte' or (
                select count(distinct m.tokenizer_hash) = 1 and bool_and(m.tokenizer_hash <> '')
                from models as m where m.model in (teacher, reference)
            ),
            'difference: per := ''token'' compares per-token log-likelihoods, which needs one tokenizer, but '''
            || teacher || ''' and ''' || reference || ''' use different ones (or one is unknown); use per := ''byte'''
        )
        and require(
            (select count(distinct m.unit) = 1 from models as m where m.model in (teacher, reference)),
            'difference: ''' || teacher || ''' and ''' || reference || ''' scored different units (documents and '
            || 'instances); score both with the same --unit'
        )
        and require_unit('difference', teacher, docs) as ok
),

teacher_scores as (
    select doc_id, sum_logprob, n_tokens from scores where model = teacher and sum_logprob is not null
),

reference_scores as (
    select doc_id, sum_logprob, n_tokens from scores where model = reference and sum_logprob is not null
),

joined as (
    select
        d.*,
        t.sum_logprob as teacher_logprob,
        r.sum_logprob as reference_logprob,
        case per
            when 'byte' then (t.sum_logprob - r.sum_logprob) / nullif(d.n_bytes, 0)
            when 'token' then t.sum_logprob / nullif(t.n_tokens, 0) - r.sum_logprob / nullif(r.n_tokens, 0)
            else error('difference: per must be ''byte'' or ''token'', not ''' || per || '''')
        end as score
    from (select *, unit_key(to_json(struct_pack(*columns('^(instance_id|doc_id)$')))) as unit_id from query_table(docs)) as d
    inner join teacher_scores as t on d.unit_id = t.doc_id
    inner join reference_scores as r on d.unit_id = r.doc_id
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves the join empty
    -- from the file list alone (no file holds a misspelled model's scores)
    select * from joined where score is not null and (select ok from checks)
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
