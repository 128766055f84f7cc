-- purpose: per-source budgets: from each source, documents in a seeded random order while they fit its budget
-- depends: uniform
-- params: budgets := map {'source': budget, ...}; unit := 'bytes' | 'tokens' | 'documents'; model := null (score name whose n_tokens count, for unit 'tokens'); seed := 0; docs := 'documents'
-- A document is kept when the running total of its source, in seeded random order, stays within
-- the budget (the order is a prefix, so no source ever exceeds its budget). Sources not named in
-- budgets are dropped. With unit 'tokens', documents without a score of `model` are dropped.
create or replace macro quota(budgets, unit := 'bytes', model := null, seed := 0, docs := 'documents') as table
with model_tokens as (
    select doc_id, n_tokens as model_tokens from (select doc_id, n_tokens, scores.model as scored_by from scores)
    where scored_by = model
),

sized as (
    select
        d.*,
        case unit
            when 'bytes' then d.n_bytes
            when 'tokens' then t.model_tokens
            when 'documents' then 1
            else error('quota: unit must be ''bytes'', ''tokens'' or ''documents'', not ''' || unit || '''')
        end as quota_units,
        budgets[d.source] as quota_budget
    from query_table(docs) as d
    left join model_tokens as t on d.doc_id = t.doc_id
),

ordered as (
    select
        *,
        sum(quota_units) over (
            partition by source order by uniform(doc_id, seed), doc_id rows unbounded preceding
        ) as quota_running
    from sized
    where quota_budget is not null and quota_units is not null
),

final as (
    select * exclude (quota_budget)
    from ordered
    where quota_running <= quota_budget
)

select * from final;
