-- purpose: documents ordered easy to hard by a model's loss (or any column), optionally cut into stages
-- depends: losses
-- params: model (score name, or null to order by a column of docs); key := 'loss_per_byte' (or 'loss_per_token', 'bits_per_byte', or any column of docs such as difference's 'score'); descending := false; stages := 1; docs := 'documents'
-- Rows come out in curriculum order; curriculum_rank (1 = easiest) and stage (1..stages, equal
-- counts) let consumers re-establish it. Documents without a value of key come last.
create or replace macro curriculum(
    model, key := 'loss_per_byte', descending := false, stages := 1, docs := 'documents'
) as table
with model_losses as (
    select doc_id, loss_per_token, loss_per_byte, bits_per_byte
    from (select * exclude (model), losses.model as scored_by from losses)
    where scored_by = model
),

joined as (
    select d.*, l.* exclude (doc_id)
    from query_table(docs) as d
    left join model_losses as l on d.doc_id = l.doc_id
),

ranked as (
    select
        *,
        row_number() over (
            order by
                (columns(key) is null),
                case when descending then -columns(key) end asc,
                case when not descending then columns(key) end asc,
                doc_id asc
        ) as curriculum_rank
    from joined
),

final as (
    select
        *,
        ntile(stages) over (order by curriculum_rank) as stage
    from ranked
    order by curriculum_rank
)

select * from final;
