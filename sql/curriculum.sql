-- purpose: documents ordered easy to hard by a model's loss (or any column), optionally cut into stages
-- depends: losses, require, require_unit, scored_models, unit_key
-- params: model (score name, or null to order by a column of docs); key := 'loss_per_byte' (or 'loss_per_token', 'bits_per_byte', or any column of docs such as difference's 'score'); descending := false; stages := 1; docs := 'documents'
-- Rows come out in curriculum order; curriculum_rank (1 = easiest) and stage (1..stages, equal
-- counts) let consumers re-establish it. Documents without a value of key come last. A model
-- without scores or stages < 1 is an error.
create or replace macro curriculum(
    model, key := 'loss_per_byte', descending := false, stages := 1, docs := 'documents'
) as table
with checks as (
    select
        require(
            model is null or exists (select 1 from scores where scores.model = model),
            'curriculum: no scores named ''' || coalesce(model, '') || '''; scored models: ' || scored_models()
            || ' (or model := null to order by a column of docs)'
        )
        and require(
            model is not null or key not in ('loss_per_byte', 'loss_per_token', 'bits_per_byte'),
            'curriculum: key ''' || key || ''' is a model''s loss; name the model, e.g. curriculum(''reference'')'
        )
        and require(stages >= 1, 'curriculum: stages must be at least 1, not ' || coalesce(stages::varchar, 'NULL'))
        and require_unit('curriculum', model, docs) as ok
),

model_losses as (
    select doc_id, loss_per_token, loss_per_byte, bits_per_byte
    from (select * exclude (model), losses.model as scored_by from losses)
    where scored_by = model
),

joined as (
    select d.*, l.* exclude (doc_id)
    from (select *, unit_key(to_json(struct_pack(*columns('^(instance_id|doc_id)$')))) as unit_id from query_table(docs)) as d
    left join model_losses as l on d.unit_id = l.doc_id
),

ranked as (
    select
        *,
        row_number() over (
            order by
                (columns(key) is null),
                case when descending then -columns(key) end asc,
                case when not descending then columns(key) end asc,
                unit_id asc
        ) as curriculum_rank
    from joined
),

final as (
    select
        * exclude (unit_id),
        ntile(stages) over (order by curriculum_rank) as stage
    from ranked
    where (select ok from checks)
    order by curriculum_rank
)

select * from final;
