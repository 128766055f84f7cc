-- purpose: per-document losses of every scored model: per token, per byte and in bits per byte
-- depends:
-- params: none (a view over scores)
-- unit_id is the key of the unit scored (doc_id, or instance_id for instance scores); doc_id holds
-- the same value, as the scores table stores it.
create or replace view losses as
with scored as (
    select doc_id, model, sum_logprob, n_tokens, n_bytes
    from scores
    where sum_logprob is not null and n_tokens > 0
),

final as (
    select
        doc_id,
        doc_id as unit_id,
        model,
        sum_logprob,
        n_tokens,
        n_bytes,
        -sum_logprob / n_tokens as loss_per_token,
        -sum_logprob / nullif(n_bytes, 0) as loss_per_byte,
        -sum_logprob / nullif(n_bytes, 0) / ln(2) as bits_per_byte
    from scored
)

select * from final;
