-- purpose: per-source budgets: from each source, documents in a seeded random order while they fit its budget
-- depends: instances_of_kept, require, require_coverage, require_unit, score_command, scored_models, uniform, unit_key
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
with model_tokens as (
    select doc_id, n_tokens as model_tokens from (select doc_id, n_tokens, scores.model as scored_by from scores)
    where scored_by = model
),

unjudged as (
    -- keys alone: the sources docs holds, and (unit 'tokens') how many units of the budgeted sources
    -- the model did not score
    select
        list(distinct d.source order by d.source) as sources,
        count(*) filter (where unit = 'tokens' and t.doc_id is null and budgets[d.source] is not null) as n_missing,
        count(*) filter (where budgets[d.source] is not null) as n_units
    from (select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id, source from query_table(docs)) as d
    left join model_tokens as t on d.unit_id = t.doc_id
),

checks as (
    select
        require(
            len(map_keys(budgets)) > 0 and list_bool_and(list_transform(map_values(budgets), lambda b: b > 0)),
            policy || ': every budget must be positive, not ' || budgets::varchar
        )
        and require(
            list_bool_and(list_transform(map_keys(budgets), lambda s: list_contains(unjudged.sources, s))),
            policy || ': no units of source(s) '
            || list_filter(map_keys(budgets), lambda s: not list_contains(unjudged.sources, s))::varchar || ' in '''
            || docs || '''; sources: ' || unjudged.sources::varchar
        )
        and require(
            unit in ('bytes', 'tokens', 'documents'),
            policy || ': unit must be ''bytes'', ''tokens'' or ''documents'', not ''' || coalesce(unit, 'NULL') || ''''
        )
        and require(
            unit <> 'tokens' or exists (select 1 from scores where scores.model = model),
            policy || ': unit ''tokens'' counts a scored model''s tokens; no scores named ''' || coalesce(model, 'NULL')
            || '''; scored models: ' || scored_models()
        )
        and require_unit(policy, case when unit = 'tokens' then model end, docs)
        and require_coverage(
            policy, missing, ['error', 'exclude'], unjudged.n_missing, unjudged.n_units, docs,
            'score of ''' || coalesce(model, '') || ''' (unit ''tokens'' counts its tokens)',
            'score them with ' || score_command(model, docs) || ' (a re-run scores only the units without a score)',
            'missing := ''exclude'' to fill the budgets from the scored units only'
        ) as ok
    from unjudged
),

sized as (
    -- keys alone: unit, source and size; the text is joined back for the kept rows
    select
        d.unit_id,
        d.n_bytes,
        d.source,
        case unit
            when 'bytes' then d.n_bytes
            when 'tokens' then t.model_tokens
            when 'documents' then 1
            else error('quota: unit must be ''bytes'', ''tokens'' or ''documents'', not ''' || unit || '''')
        end as quota_units,
        budgets[d.source] as quota_budget
    from (select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id, n_bytes, source from query_table(docs)) as d
    left join model_tokens as t on d.unit_id = t.doc_id
),

ordered as (
    select
        *,
        sum(quota_units) over (
            partition by source order by uniform(unit_id, seed), unit_id rows unbounded preceding
        ) as quota_running
    from sized
    where quota_budget is not null and quota_units is not null
),

kept as (
    -- one row per unit, where docs repeats rows (each of its rows then joins back once)
    select distinct on (unit_id, n_bytes, source) unit_id, n_bytes, source, quota_units, quota_running
    from ordered
    where (select ok from checks) and quota_running <= quota_budget
    order by unit_id, n_bytes, source, quota_running
),

kept_instances as (
    -- docs := 'instances': only the kept spans are joined to their documents and cut
    select * from instances_of_kept('kept')
),

final as (
    -- the second branch never has a row, but keeps the checks where DuckDB proves the rest empty
    select d.* exclude (unit_id), kept.quota_units, kept.quota_running
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(case when docs = 'instances' then 'kept_instances' else docs end)) as d
    inner join kept on d.unit_id = kept.unit_id and d.n_bytes = kept.n_bytes and d.source = kept.source
    union all by name
    select null::bigint as doc_id from checks where not checks.ok
)

select * from final;
