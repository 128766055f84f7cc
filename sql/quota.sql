-- purpose: per-source budgets: from each source, documents in a seeded random order while they fit its budget
-- depends: instances_of_kept, quota_checks, quota_units, uniform, unit_key
-- params: budgets := map {'source': budget, ...}; unit := 'bytes' | 'tokens' | 'documents'; model := null (score name whose n_tokens count, for unit 'tokens'); seed := 0; docs := 'documents'; missing := 'error' | 'exclude' (unit 'tokens'); policy := 'quota' (the name its errors give; mixture passes its own)
-- A document is kept when the running total of its source, in seeded random order, stays within
-- the budget (the order is a prefix, so no source ever exceeds its budget). Sources not named in
-- budgets are dropped; a source named in budgets that docs does not hold (a misspelling) is an
-- error. With unit 'tokens' every unit of docs needs a score of `model` (its n_tokens): unscored
-- units are an error naming how many and the `corpusdb score` run that fills the gap, unless
-- missing := 'exclude' (they are never kept). The running totals run over keys alone (unit,
-- source, size); the text is joined back for the kept rows. A budget that is not positive, an
-- unknown unit, or unit 'tokens' without a scored model is an error.
create or replace macro quota(
    budgets, unit := 'bytes', model := null, seed := 0, docs := 'documents', missing := 'error', policy := 'quota'
) as table
with units as not materialized (
    -- keys alone: unit, source, size and budget; the text is joined back for the kept rows. Read twice (the
    -- checks' counts, the running totals) rather than held: a scan of three key columns costs less than holding
    -- every unit's keys beside the window's sort
    select * from quota_units(budgets, unit := unit, model := model, docs := docs, policy := policy)
),

checks as (
    select quota_checks(
        budgets, unit, model, docs, missing, policy, list(distinct source order by source),
        count(*) filter (where unjudged and quota_budget is not null), count(*) filter (where quota_budget is not null)
    ) as ok
    from units
),

ordered as (
    -- the sort carries what the cut and the result need: the source as its place among the budgets' keys
    -- (an integer, not the string, in the partition and the payload); the budget is looked up again after it
    select
        unit_id,
        n_bytes,
        source_index,
        quota_units,
        sum(quota_units) over (
            partition by source_index order by uniform(unit_id, seed), unit_id rows unbounded preceding
        ) as quota_running
    from (select *, list_position(map_keys(budgets), source) as source_index from units)
    where quota_budget is not null and quota_units is not null
),

kept_rows as not materialized (
    select * exclude (source_index), map_keys(budgets)[source_index] as source
    from ordered
    where (select ok from checks) and quota_running <= map_values(budgets)[source_index]
),

kept as (
    -- one row per unit, where docs repeats rows (each of its rows then joins back once): `documents` holds each
    -- doc_id once (ingest and register_parts refuse a repeat), so only another docs pays for the distinct
    select * from kept_rows where docs = 'documents'
    union all
    select * from (
        select distinct on (unit_id, n_bytes, source) * from kept_rows where docs <> 'documents'
        order by unit_id, n_bytes, source, quota_running
    )
),

kept_instances as (
    -- docs := 'instances': only the kept spans are joined to their documents and cut, each with its kept row's
    -- columns: a kept span is one kept unit, so nothing joins back
    select * exclude (quota_units, quota_running), quota_units, quota_running from instances_of_kept('kept')
),

joined_back as (
    -- any other docs: its rows of the kept units
    select d.* exclude (unit_id), kept.quota_units, kept.quota_running
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    inner join kept on d.unit_id = kept.unit_id and d.n_bytes = kept.n_bytes and d.source = kept.source
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves the rest empty
    select * from query_table(case when docs = 'instances' then 'kept_instances' else 'joined_back' end)
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
