-- purpose: every unit of docs with its source, its size in a quota's unit and its source's budget, on keys alone (no text): what quota and mixture rank
-- depends: unit_key
-- params: budgets := map {'source': budget, ...}; unit := 'bytes' | 'tokens' | 'documents'; model := null (score name whose n_tokens count, for unit 'tokens'); docs := 'documents'; policy := 'quota' (the name its errors give)
-- One row per row of docs: unit_id, n_bytes, source, quota_units (n_bytes, the model's n_tokens, or
-- 1; NULL for unit 'tokens' where the model has no score of the unit), quota_budget (the budget
-- of its source, NULL for a source budgets does not name) and unjudged (unit 'tokens' and no
-- score of the model). The text is never read. An unknown unit is an error.
create or replace macro quota_units(budgets, unit := 'bytes', model := null, docs := 'documents', policy := 'quota') as table
with model_tokens as (
    select doc_id, n_tokens as model_tokens from (select doc_id, n_tokens, scores.model as scored_by from scores)
    where scored_by = model
),

final as (
    select
        d.unit_id,
        d.n_bytes,
        d.source,
        case unit
            when 'bytes' then d.n_bytes
            when 'tokens' then t.model_tokens
            when 'documents' then 1
            else error(policy || ': unit must be ''bytes'', ''tokens'' or ''documents'', not ''' || unit || '''')
        end as quota_units,
        budgets[d.source] as quota_budget,
        unit = 'tokens' and t.doc_id is null as unjudged
    from (select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id, n_bytes, source from query_table(docs)) as d
    left join model_tokens as t on d.unit_id = t.doc_id
)

select * from final;
