-- purpose: MiniPLM Difference Sampling: the top alpha fraction of documents by teacher-minus-reference log-likelihood
-- depends: difference_scores
-- params: teacher, reference (score names); alpha := 0.5; per := 'byte' | 'token'; docs := 'documents'
-- Keeps ceil(alpha * N) of the N documents that have both scores, highest score first; ties are
-- broken by doc_id, so the result is deterministic. Rows come out in score order.
create or replace macro difference(teacher, reference, alpha := 0.5, per := 'byte', docs := 'documents') as table
with scored as (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

ranked as (
    select
        *,
        row_number() over (order by score desc, doc_id asc) as difference_rank,
        count(*) over () as n_scored
    from scored
),

final as (
    select * exclude (n_scored)
    from ranked
    where
        alpha between 0 and 1
        and difference_rank <= ceil(alpha * n_scored)
    order by difference_rank
)

select * from final;
