-- purpose: a mixture: a total budget split over sources by weight, each source filled in seeded random order
-- depends: uniform
-- params: weights := map {'source': weight, ...}; total (budget in unit); unit := 'bytes' | 'tokens' | 'documents'; model := null; seed := 0; docs := 'documents'
-- Source s gets total * weight_s / sum(weights); a source with too little data falls short of its
-- share (nothing is reallocated). Sources not named in weights are dropped.
create or replace macro mixture(weights, total, unit := 'bytes', model := null, seed := 0, docs := 'documents') as table
with model_tokens as (
    select doc_id, n_tokens as model_tokens from (select doc_id, n_tokens, scores.model as scored_by from scores)
    where scored_by = model
),

weight_sum as (
    select list_sum(map_values(weights)) as total_weight
),

sized as (
    select
        d.*,
        case unit
            when 'bytes' then d.n_bytes
            when 'tokens' then t.model_tokens
            when 'documents' then 1
            else error('mixture: unit must be ''bytes'', ''tokens'' or ''documents'', not ''' || unit || '''')
        end as mixture_units,
        total * weights[d.source] / (select total_weight from weight_sum) as mixture_budget
    from query_table(docs) as d
    left join model_tokens as t on d.doc_id = t.doc_id
),

ordered as (
    select
        *,
        sum(mixture_units) over (
            partition by source order by uniform(doc_id, seed), doc_id rows unbounded preceding
        ) as mixture_running
    from sized
    where mixture_budget is not null and mixture_units is not null
),

final as (
    select * exclude (mixture_budget)
    from ordered
    where mixture_running <= mixture_budget
)

select * from final;
