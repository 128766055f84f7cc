-- purpose: MiniPLM's difference score per document: how much more likely the teacher finds it than the reference
-- depends: difference_keys, unit_key
-- params: teacher, reference (score names); per := 'byte' | 'token'; docs := 'documents' (any table or view with doc_id; 'instances' or a view over them for instance scores); missing := 'error' | 'exclude'
-- Every row of docs that has both scores, with all its columns, plus unit_id, teacher_logprob,
-- reference_logprob and score (see `difference_keys`, which computes them on keys alone, and whose
-- checks, coverage rule and `missing` these are). For looking at scores with their text; the policies rank
-- `difference_keys` and join the text back for the kept rows only.
create or replace macro difference_scores(teacher, reference, per := 'byte', docs := 'documents', missing := 'error') as table
with keys as (
    select distinct unit_id, n_bytes, teacher_logprob, reference_logprob, score  -- one row per unit of a docs that repeats rows
    from difference_keys(teacher, reference, per := per, docs := docs, missing := missing)
),

final as (
    select d.*, keys.teacher_logprob, keys.reference_logprob, keys.score
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    inner join keys on d.unit_id = keys.unit_id and d.n_bytes = keys.n_bytes
)

select * from final;
