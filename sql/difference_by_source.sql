-- purpose: difference sampling with a keep fraction per source (top alpha of each source by the difference score)
-- depends: difference_coverage, difference_kept, difference_units, instances_of_kept, require, unit_key
-- params: teacher, reference; alphas := map {'source': alpha, ...}; alpha := 0.5 (sources not in alphas); per; docs; missing := 'error' | 'exclude'
-- Each source is ranked on keys alone (`difference_units`); the two models' log-likelihoods
-- (`difference_kept`) and the text are joined back for the kept rows, which come by source, then
-- rank (difference_rank).
-- Every unit of docs needs a score of both models: units without one are an error naming how
-- many and the `corpusdb score` run that fills the gap, unless missing := 'exclude' (then only
-- the units with both scores are ranked, and each alpha is of those). Empty units (nothing to score)
-- are never selected.
-- A source named in alphas that docs does not hold is an error.
create or replace macro difference_by_source(
    teacher, reference, alphas := map {}, alpha := 0.5, per := 'byte', docs := 'documents', missing := 'error'
) as table
with units as materialized (
    -- every unit of docs on keys alone (no text, no log-likelihoods), with whether each model scored it
    select unit_id, source, n_bytes, has_teacher, has_reference, score
    from difference_units(teacher, reference, per := per, docs := docs)
),

checks as (
    select
        require(
            alpha > 0 and alpha <= 1, 'difference_by_source: alpha must be in (0, 1], not ' || coalesce(alpha::varchar, 'NULL')
        )
        and require(
            coalesce(list_bool_and(list_transform(map_values(alphas), lambda a: a > 0 and a <= 1)), true),
            'difference_by_source: every value of alphas must be in (0, 1], not ' || alphas::varchar
        )
        and require(
            coalesce(list_bool_and(list_transform(map_keys(alphas), lambda s: list_contains(list(distinct source), s))), true),
            'difference_by_source: no units of source(s) '
            || list_filter(map_keys(alphas), lambda s: not list_contains(list(distinct source), s))::varchar
            || ' in ''' || docs || '''; sources: ' || list(distinct source order by source)::varchar
        )
        and difference_coverage(
            'difference_by_source', teacher, reference, missing,
            count(*) filter (where not has_teacher), count(*) filter (where not has_reference),
            count(*) filter (where not (has_teacher and has_reference)), count(*), docs
        ) as ok
    from units
),

ranked as (
    select
        *,
        coalesce(alphas[source], alpha) as source_alpha,
        row_number() over (partition by source order by score desc, unit_id asc) as difference_rank,
        count(*) over (partition by source) as n_scored
    from units
    where score is not null
),

kept_keys as (
    -- one row per unit, where docs repeats rows (each of its rows then joins back once)
    select distinct on (unit_id, n_bytes) unit_id, n_bytes, score, difference_rank
    from ranked
    where (select ok from checks) and difference_rank <= ceil(source_alpha * n_scored)
    order by unit_id, n_bytes, difference_rank
),

kept as materialized (
    -- the two models' log-likelihoods, read back for the kept units only
    select * from difference_kept('kept_keys', teacher, reference)
),

kept_instances as (
    -- docs := 'instances': only the kept spans are joined to their documents and cut, each with its kept row's
    -- columns: a kept span is one kept unit, so nothing joins back (at 50M instances that join hashed 25M kept rows)
    select * exclude (teacher_logprob, reference_logprob, score, difference_rank),
        teacher_logprob, reference_logprob, score, difference_rank, instance_id as unit_id
    from instances_of_kept('kept')
),

joined_back as (
    -- any other docs: its rows of the kept units
    select d.*, kept.teacher_logprob, kept.reference_logprob, kept.score, kept.difference_rank
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
    order by source, difference_rank, unit_id
)

select * from final;
