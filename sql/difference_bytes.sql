-- purpose: MiniPLM Difference Sampling under a byte budget: the top documents by teacher-minus-reference log-likelihood until they hold alpha of the text
-- depends: instances_of_kept, difference_kept, difference_units, difference_coverage, require, unit_key
-- params: teacher, reference (score names); alpha := 0.5 (fraction of the text bytes); per := 'byte' | 'token'; docs := 'documents'; missing := 'error' | 'exclude'
-- MiniPLM scores equal-length instances, so its top alpha of instances is also alpha of the tokens.
-- With whole documents of very different lengths, `difference` (alpha of the documents) can hold
-- far less or far more text than a uniform sample of alpha of them; this view keeps documents in
-- (score desc, doc_id asc) order while the bytes before them are under alpha of all scored bytes,
-- so it holds at least alpha of the text and overshoots by less than one document. The running
-- sum runs over the keys alone (`difference_units`: unit_id, score, n_bytes) and finds the last kept
-- document; the two models' log-likelihoods (`difference_kept`) and the text are joined back for
-- the kept rows only. Rows come in no particular order.
-- Every unit of docs needs a score of both models: units without one are an error naming how
-- many and the `corpusdb score` run that fills the gap, unless missing := 'exclude' (then only
-- the units with both scores are ranked, and alpha is of those). Empty units (nothing to score)
-- are never selected.
create or replace macro difference_bytes(teacher, reference, alpha := 0.5, per := 'byte', docs := 'documents', missing := 'error') as table
with units as materialized (
    -- every unit of docs on keys alone (no text, no log-likelihoods), with whether each model scored it;
    -- n_bytes held in 4 bytes (a DuckDB string is under 4 GB): 0.2 GB less at 50M units
    select unit_id, n_bytes::uinteger as n_bytes, has_teacher, has_reference, score
    from difference_units(teacher, reference, per := per, docs := docs)
),

checks as (
    select require(
        alpha > 0 and alpha <= 1, 'difference_bytes: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
    )
        and difference_coverage(
            'difference_bytes', teacher, reference, missing,
            count(*) filter (where not has_teacher), count(*) filter (where not has_reference),
            count(*) filter (where not (has_teacher and has_reference)), count(*), docs
        ) as ok
    from units
),

keys as (
    -- the units it ranks: those with a difference score (after the coverage check)
    select unit_id, n_bytes, score from units where score is not null
),

budget as (
    select alpha * sum(n_bytes::bigint) as bytes_budget from keys
),

ranked as (
    select
        unit_id,
        score,
        sum(n_bytes::bigint) over (order by score desc, unit_id asc rows between unbounded preceding and current row)
            - n_bytes as bytes_before
    from keys
),

cut as (
    -- the last unit, in selection order, that starts under the budget
    select ranked.score, ranked.unit_id
    from ranked, budget
    where ranked.bytes_before < budget.bytes_budget
    order by ranked.score asc, ranked.unit_id desc
    limit 1
),

kept_rows as not materialized (
    select keys.*
    from keys, cut
    where
        (select ok from checks)
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
