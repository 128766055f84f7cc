-- purpose: MiniPLM Difference Sampling: the top alpha fraction of documents by teacher-minus-reference log-likelihood
-- depends: difference_scores, require
-- params: teacher, reference (score names); alpha := 0.5; per := 'byte' | 'token'; docs := 'documents' (or 'instances')
-- Keeps the first ceil(alpha * N) of the N documents (or instances) that have both scores in the
-- order (score desc, unit_id asc), so ties are broken by doc_id (instance_id over instances) and
-- the result is deterministic. Rows come in no particular order (add `order by score desc, doc_id`
-- for rank order): finding the k-th document and filtering on it is about twice as fast as
-- ranking every document. alpha outside (0, 1] is an error.
create or replace macro difference(teacher, reference, alpha := 0.5, per := 'byte', docs := 'documents') as table
with checks as (
    select require(
        alpha > 0 and alpha <= 1, 'difference: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
    ) as ok
),

scored as materialized (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

quota as (
    select least(ceil(alpha * count(*)), count(*))::bigint as k from scored
),

cut as (
    -- the k-th document in selection order: everything at or before it is kept
    select score, unit_id
    from scored
    order by score desc, unit_id asc
    limit 1 offset (select greatest(k - 1, 0) from quota)
),

final as (
    select scored.* exclude (unit_id)
    from scored, cut, quota
    where
        (select ok from checks)
        and quota.k > 0
        and (scored.score > cut.score or (scored.score = cut.score and scored.unit_id <= cut.unit_id))
)

select * from final;
