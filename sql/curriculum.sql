-- purpose: documents ordered easy to hard by a model's loss (or any column), optionally cut into stages
-- depends: losses, require, require_unit, scored_models, unit_key
-- params: model (score name, or null to order by a column of docs); key := 'loss_per_byte' (or 'loss_per_token', 'bits_per_byte', or any column of docs such as difference's 'score'); descending := false; stages := 1; docs := 'documents'
-- Rows come out in curriculum order; curriculum_rank (1 = easiest) and stage (1..stages, equal
-- counts, as ntile gives them) let consumers re-establish it. Documents without a value of key
-- come last. A model without scores or stages < 1 is an error.
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
    from (select *, unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from query_table(docs)) as d
    left join model_losses as l on d.unit_id = l.doc_id
),

ranked as (
    -- one sort of the rows (DuckDB sorts the text along, spilling where it must): a curriculum keeps
    -- every row, so ranking keys and joining every row back would only add a join
    select
        *,
        row_number() over (
            order by
                (columns(key) is null),
                case when descending then -columns(key) else columns(key) end asc,
                unit_id asc
        ) as curriculum_rank
    from joined
),

sizes as (
    -- every row of docs is ranked once (the losses join at most one row to each)
    select count(*) // stages as per_stage, count(*) % stages as longer from query_table(docs)
),

final as (
    -- ntile(stages) by arithmetic: the first (n % stages) stages hold one row more
    select
        ranked.* exclude (unit_id),
        case
            when curriculum_rank <= longer * (per_stage + 1) then (curriculum_rank - 1) // (per_stage + 1) + 1
            else longer + (curriculum_rank - 1 - longer * (per_stage + 1)) // per_stage + 1
        end as stage
    from ranked, sizes
    where (select ok from checks)
    order by curriculum_rank
)

select * from final;
