-- purpose: a model's losses per unit it scored (per token, per byte, bits per byte): what curriculum orders by
-- depends:
-- params: score_name (a score name; not `model`, which the scores view's own columns would take for the parameter)
-- One row per unit the model scored: doc_id (the unit's key), loss_per_token, loss_per_byte and
-- bits_per_byte (-sum_logprob over the unit's tokens or bytes; NULL for an empty unit: judged,
-- nothing to divide by).
create or replace macro model_losses(score_name) as table
with final as (
    select
        doc_id,
        -sum_logprob / nullif(n_tokens, 0) as loss_per_token,
        -sum_logprob / nullif(n_bytes, 0) as loss_per_byte,
        -sum_logprob / nullif(n_bytes, 0) / ln(2) as bits_per_byte
    from (select doc_id, sum_logprob, n_tokens, n_bytes, scores.model as scored_by from scores)
    where scored_by = score_name
)

select * from final;
