-- purpose: stochastic difference sampling: alpha of the documents drawn without replacement with probability proportional to exp(score / temperature)
-- depends: difference_scores, uniform
-- params: teacher, reference; alpha := 0.5; temperature := 1.0; seed := 0; per; docs
-- Gumbel top-k: adding Gumbel noise -ln(-ln(u)) to score / temperature and keeping the top k
-- draws k documents without replacement with these probabilities. u is seeded per document
-- (`uniform`), so a seed gives the same subset everywhere; temperature -> 0 gives `difference`.
create or replace macro difference_sampled(
    teacher, reference, alpha := 0.5, temperature := 1.0, seed := 0, per := 'byte', docs := 'documents'
) as table
with scored as (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

keyed as (
    select
        *,
        score / temperature - ln(-ln(uniform(doc_id, seed))) as sample_key
    from scored
),

ranked as (
    select
        *,
        row_number() over (order by sample_key desc, doc_id asc) as sample_rank,
        count(*) over () as n_scored
    from keyed
),

final as (
    select * exclude (n_scored)
    from ranked
    where temperature > 0 and sample_rank <= ceil(alpha * n_scored)
    order by sample_rank
)

select * from final;
