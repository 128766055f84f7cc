-- purpose: MiniPLM's difference score per document: how much more likely the teacher finds it than the reference
-- depends: uniform
-- params: teacher, reference (score names); per := 'byte' | 'token'; docs := 'documents' (any table or view with doc_id)
-- score = (log p_teacher(x) - log p_ref(x)) / n_bytes: log-likelihoods of the whole text, so the
-- difference is comparable across tokenizers. per := 'token' uses each model's own per-token
-- log-likelihood instead (only meaningful when both share a tokenizer). Documents missing either
-- score, or with a NULL one (empty text), or with no bytes or tokens to divide by, get no row.
create or replace macro difference_scores(teacher, reference, per := 'byte', docs := 'documents') as table
with teacher_scores as (
    select doc_id, sum_logprob, n_tokens from scores where model = teacher and sum_logprob is not null
),

reference_scores as (
    select doc_id, sum_logprob, n_tokens from scores where model = reference and sum_logprob is not null
),

joined as (
    select
        d.*,
        t.sum_logprob as teacher_logprob,
        r.sum_logprob as reference_logprob,
        case per
            when 'byte' then (t.sum_logprob - r.sum_logprob) / nullif(d.n_bytes, 0)
            when 'token' then t.sum_logprob / nullif(t.n_tokens, 0) - r.sum_logprob / nullif(r.n_tokens, 0)
            else error('difference: per must be ''byte'' or ''token'', not ''' || per || '''')
        end as score
    from query_table(docs) as d
    inner join teacher_scores as t on d.doc_id = t.doc_id
    inner join reference_scores as r on d.doc_id = r.doc_id
),

final as (
    select * from joined where score is not null
)

select * from final;
