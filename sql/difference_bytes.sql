-- purpose: MiniPLM Difference Sampling under a byte budget: the top documents by teacher-minus-reference log-likelihood until they hold alpha of the text
-- depends: difference_scores
-- params: teacher, reference (score names); alpha := 0.5 (fraction of the text bytes); per := 'byte' | 'token'; docs := 'documents'
-- MiniPLM scores equal-length instances, so its top alpha of instances is also alpha of the tokens.
-- With whole documents of very different lengths, `difference` (alpha of the documents) can hold
-- far less or far more text than a uniform sample of alpha of them; this view keeps documents in
-- (score desc, doc_id asc) order while the bytes before them are under alpha of all scored bytes,
-- so it holds at least alpha of the text and overshoots by less than one document.
create or replace macro difference_bytes(teacher, reference, alpha := 0.5, per := 'byte', docs := 'documents') as table
with scored as materialized (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

budget as (
    select greatest(alpha, 0) * sum(n_bytes) as bytes_budget from scored
),

ranked as (
    select
        *,
        sum(n_bytes) over (order by score desc, doc_id asc rows between unbounded preceding and 1 preceding) as bytes_before
    from scored
),

final as (
    select ranked.* exclude (bytes_before)
    from ranked, budget
    where coalesce(ranked.bytes_before, 0) < budget.bytes_budget
)

select * from final;
