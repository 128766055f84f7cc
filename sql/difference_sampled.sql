-- purpose: stochastic difference sampling: alpha of the documents drawn without replacement with probability proportional to exp(score / temperature)
-- depends: difference_coverage, difference_kept, difference_units, instances_of_kept, require, uniform, unit_key
-- params: teacher, reference; alpha := 0.5; temperature := 1.0; seed := 0; per; docs; missing := 'error' | 'exclude'
-- Gumbel top-k: adding Gumbel noise -ln(-ln(u)) to score / temperature and keeping the top k
-- draws k documents without replacement with these probabilities. u is seeded per document
-- (`uniform`), so a seed gives the same subset everywhere; temperature -> 0 gives `difference`.
-- The draw runs on keys alone (`difference_units`); the text is joined back for the drawn rows,
-- which come in draw order (sample_rank). alpha outside (0, 1] or a temperature that is not
-- positive is an error.
-- Every unit of docs needs a score of both models: units without one are an error naming how
-- many and the `corpusdb score` run that fills the gap, unless missing := 'exclude' (then only
-- the units with both scores are ranked, and alpha is of those). Empty units (nothing to score)
-- are never selected.
create or replace macro difference_sampled(
    teacher, reference, alpha := 0.5, temperature := 1.0, seed := 0, per := 'byte', docs := 'documents', missing := 'error'
) as table
with units as materialized (
    -- every unit of docs on keys alone (no text, no log-likelihoods), with whether each model scored it
    select unit_id, n_bytes, has_teacher, has_reference, score
    from difference_units(teacher, reference, per := per, docs := docs)
),

checks as (
    select
        require(
            alpha > 0 and alpha <= 1, 'difference_sampled: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
        )
        and require(
            temperature > 0,
            'difference_sampled: temperature must be positive, not ' || coalesce(temperature::varchar, 'NULL')
            || ' (as it goes to 0 this becomes difference(...))'
        )
        and difference_coverage(
            'difference_sampled', teacher, reference, missing,
            count(*) filter (where not has_teacher), count(*) filter (where not has_reference),
            count(*) filter (where not (has_teacher and has_reference)), count(*), docs
        ) as ok
    from units
),

keys as (
    select
        unit_id, n_bytes, score,
        score / temperature - ln(-ln(uniform(unit_id, seed))) as sample_key
    from units
    where score is not null
),

ranked as (
    select
        *,
        row_number() over (order by sample_key desc, unit_id asc) as sample_rank,
        count(*) over () as n_scored
    from keys
),

kept_keys as (
    -- one row per unit, where docs repeats rows (each of its rows then joins back once)
    select distinct on (unit_id, n_bytes) * exclude (n_scored)
    from ranked
    where (select ok from checks) and sample_rank <= ceil(alpha * n_scored)
    order by unit_id, n_bytes, sample_rank
),

kept as materialized (
    -- the two models' log-likelihoods, read back for the kept units only
    select * from difference_kept('kept_keys', teacher, reference)
),

kept_instances as (
    -- docs := 'instances': only the kept spans are joined to their documents and cut, each with its kept row's
    -- columns: a kept span is one kept unit, so nothing joins back (at 50M instances that join hashed 25M kept rows)
    select * exclude (teacher_logprob, reference_logprob, score, sample_key, sample_rank),
        teacher_logprob, reference_logprob, score, sample_key, sample_rank, instance_id as unit_id
    from instances_of_kept('kept')
),

joined_back as (
    -- any other docs: its rows of the kept units
    select d.*, kept.teacher_logprob, kept.reference_logprob, kept.score, kept.sample_key, kept.sample_rank
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    -- the kept keys are the side DuckDB hashes: it hashes the side it estimates smaller and takes a filter
    -- to keep a fifth of the rows, so the filter (true of every kept row) keeps it from hashing docs' rows,
    -- text and all (it hashed the kept instances' text at 50M instances, 17 GB, when they joined back here).
    -- A doc_id is one row of documents; a row of another docs joins back on its unit and bytes
    inner join (select * from kept where score is not null and teacher_logprob is not null) as kept
        on d.unit_id = kept.unit_id and (docs = 'documents' or d.n_bytes = kept.n_bytes)
),

final as (
    select * exclude (unit_id)
    from query_table(case when docs = 'instances' then 'kept_instances' else 'joined_back' end)
    order by sample_rank, unit_id
)

select * from final;
