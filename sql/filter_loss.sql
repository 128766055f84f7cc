-- purpose: documents whose loss under a model lies in a range (e.g. drop gibberish and boilerplate)
-- depends: losses
-- params: model (score name); min_loss := null; max_loss := null; per := 'byte' | 'token'; docs := 'documents'
-- Losses are natural-log nats per byte (or per token). Documents without a score are dropped.
create or replace macro filter_loss(model, min_loss := null, max_loss := null, per := 'byte', docs := 'documents') as table
with model_losses as (
    select
        doc_id,
        case per
            when 'byte' then loss_per_byte
            when 'token' then loss_per_token
            else error('filter_loss: per must be ''byte'' or ''token'', not ''' || per || '''')
        end as filter_loss
    from (select * exclude (model), losses.model as scored_by from losses)
    where scored_by = model
),

final as (
    select d.*
    from query_table(docs) as d
    inner join model_losses as l on d.doc_id = l.doc_id
    where
        (min_loss is null or l.filter_loss >= min_loss)
        and (max_loss is null or l.filter_loss <= max_loss)
)

select * from final;
