-- purpose: MiniPLM Difference Sampling under a byte budget: the top documents by teacher-minus-reference log-likelihood until they hold alpha of the text
-- depends: difference_scores, require
-- params: teacher, reference (score names); alpha := 0.5 (fraction of the text bytes); per := 'byte' | 'token'; docs := 'documents'
-- MiniPLM scores equal-length instances, so its top alpha of instances is also alpha of the tokens.
-- With whole documents of very different lengths, `difference` (alpha of the documents) can hold
-- far less or far more text than a uniform sample of alpha of them; this view keeps documents in
-- (score desc, doc_id asc) order while the bytes before them are under alpha of all scored bytes,
-- so it holds at least alpha of the text and overshoots by less than one document. The running
-- sum runs over (doc_id, score, n_bytes) alone and finds the last kept document; the rows are then
-- filtered on it, as `difference` does, so no text is sorted. Rows come in no particular order.
create or replace macro difference_bytes(teacher, reference, alpha := 0.5, per := 'byte', docs := 'documents') as table
with checks as (
    select require(
        alpha > 0 and alpha <= 1, 'difference_bytes: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
    ) as ok
),

scored as materialized (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

budget as (
    select alpha * sum(n_bytes) as bytes_budget from scored
),

ranked as (
    select
        unit_id,
        score,
        sum(n_bytes) over (order by score desc, unit_id asc rows between unbounded preceding and current row) - n_bytes
            as bytes_before
    from scored
),

cut as (
    -- the last document, in selection order, that starts under the budget
    select ranked.score, ranked.unit_id
    from ranked, budget
    where ranked.bytes_before < budget.bytes_budget
    order by ranked.score asc, ranked.unit_id desc
    limit 1
),

final as (
    select scored.* exclude (unit_id)
    from scored, cut
    where
        (select ok from checks)
        and (scored.score > cut.score or (scored.score = cut.score and scored.unit_id <= cut.unit_id))
)

select * from final;
