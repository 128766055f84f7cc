-- purpose: stochastic difference sampling: alpha of the documents drawn without replacement with probability proportional to exp(score / temperature)
-- depends: difference_scores, uniform, require
-- params: teacher, reference; alpha := 0.5; temperature := 1.0; seed := 0; per; docs
-- Gumbel top-k: adding Gumbel noise -ln(-ln(u)) to score / temperature and keeping the top k
-- draws k documents without replacement with these probabilities. u is seeded per document
-- (`uniform`), so a seed gives the same subset everywhere; temperature -> 0 gives `difference`.
-- alpha outside (0, 1] or a temperature that is not positive is an error.
create or replace macro difference_sampled(
    teacher, reference, alpha := 0.5, temperature := 1.0, seed := 0, per := 'byte', docs := 'documents'
) as table
with checks as (
    select
        require(
            alpha > 0 and alpha <= 1, 'difference_sampled: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
        )
        and require(
            temperature > 0,
            'difference_sampled: temperature must be positive, not ' || coalesce(temperature::varchar, 'NULL')
            || ' (as it goes to 0 this becomes difference(...))'
        ) as ok
),

scored as (
    select * from difference_scores(teacher, reference, per := per, docs := docs)
),

keyed as (
    select
        *,
        score / temperature - ln(-ln(uniform(unit_id, seed))) as sample_key
    from scored
),

ranked as (
    select
        *,
        row_number() over (order by sample_key desc, unit_id asc) as sample_rank,
        count(*) over () as n_scored
    from keyed
),

final as (
    select * exclude (n_scored, unit_id)
    from ranked
    where (select ok from checks) and sample_rank <= ceil(alpha * n_scored)
    order by sample_rank
)

select * from final;
