-- purpose: MiniPLM Difference Sampling: the top alpha fraction of documents by teacher-minus-reference log-likelihood
-- depends: instances_of_kept, difference_kept, difference_units, difference_coverage, require, unit_key
-- params: teacher, reference (score names); alpha := 0.5; per := 'byte' | 'token'; docs := 'documents' (or 'instances'); missing := 'error' | 'exclude'
-- Every unit of docs needs a score of both models: units without one are an error naming how
-- many and the `corpusdb score` run that fills the gap, unless missing := 'exclude' (then only
-- the units with both scores are ranked, and alpha is of those). Empty units (nothing to score)
-- are never selected.
-- Keeps the first ceil(alpha * N) of the N documents (or instances) with a difference score in
-- the order (score desc, unit_id asc), so ties are broken by doc_id (instance_id over instances) and
-- the result is deterministic. The ranking runs on keys and scores alone (`difference_units`): the
-- k-th unit is found, the units at or before it are kept, and only then are the two models'
-- log-likelihoods (`difference_kept`) and the text joined back, for the kept rows. Rows come in no
-- particular order (add `order by score desc, doc_id` for rank order). alpha outside (0, 1] is an
-- error.
create or replace macro difference(teacher, reference, alpha := 0.5, per := 'byte', docs := 'documents', missing := 'error') as table
with units as materialized (
    -- every unit of docs on keys alone (no text, no log-likelihoods), with whether each model scored it
    select unit_id, n_bytes, has_teacher, has_reference, score
    from difference_units(teacher, reference, per := per, docs := docs)
),

checks as (
    select require(
        alpha > 0 and alpha <= 1, 'difference: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
    )
        and difference_coverage(
            'difference', teacher, reference, missing,
            count(*) filter (where not has_teacher), count(*) filter (where not has_reference),
            count(*) filter (where not (has_teacher and has_reference)), count(*), docs
        ) as ok
    from units
),

keys as (
    -- the units it ranks: those with a difference score (after the coverage check)
    select unit_id, n_bytes, score from units where score is not null
),

quota as (
    -- alpha clamped to [0, 1] here so that a huge one is refused by checks, not by an overflowing cast
    select least(ceil(least(greatest(alpha, 0), 1) * count(*)), count(*))::bigint as k from keys
),

cut as (
    -- the k-th unit in selection order: everything at or before it is kept
    select score, unit_id
    from (select score, unit_id, row_number() over (order by score desc, unit_id asc) as position from keys)
    where position = (select greatest(k, 1) from quota)
),

kept_rows as not materialized (
    select keys.*
    from keys, cut, quota
    where
        (select ok from checks)
        and quota.k > 0
        and (keys.score > cut.score or (keys.score = cut.score and keys.unit_id <= cut.unit_id))
),

kept_keys as (
    -- one row per unit: `documents` holds each doc_id once (ingest and register_parts refuse a
    -- repeat); another docs may repeat rows, and each of its rows then joins back once
    select * from kept_rows where docs = 'documents'
    union all
    select distinct * from kept_rows where docs <> 'documents'
),

kept as materialized (
    select * from difference_kept('kept_keys', teacher, reference)
),

kept_instances as (
    -- docs := 'instances': only the kept spans are joined to their documents and cut, each with its kept row's
    -- columns: a kept span is one kept unit, so nothing joins back (at 50M instances that join hashed 25M kept rows)
    select * exclude (teacher_logprob, reference_logprob, score),
        teacher_logprob, reference_logprob, score
    from instances_of_kept('kept')
),

joined_back as (
    -- any other docs: its rows of the kept units
    select d.* exclude (unit_id), kept.teacher_logprob, kept.reference_logprob, kept.score
    from (
        select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id
        from query_table(docs)
    ) as d
    -- the kept keys are the side DuckDB hashes: it hashes the side it estimates smaller and takes a filter
    -- to keep a fifth of the rows, so the filter (true of every kept row) keeps it from hashing docs' rows,
    -- text and all (it hashed the kept instances' text at 50M instances, 17 GB, when they joined back here).
    -- A doc_id is one row of documents; a row of another docs joins back on its unit and bytes
    inner join (select * from kept where score is not null and teacher_logprob is not null) as kept
        on d.unit_id = kept.unit_id and (docs = 'documents' or d.n_bytes = kept.n_bytes)
),

final as (
    select * from query_table(case when docs = 'instances' then 'kept_instances' else 'joined_back' end)
)

select * from final;
