-- purpose: a difference policy's kept units with both models' log-likelihoods, read back from scores for the kept units only
-- depends:
-- params: kept (the name of a table, view or CTE with unit_id: the policy's kept keys); teacher, reference (score names)
-- The difference policies rank units on their keys and scores alone (`difference_units`: unit_id,
-- n_bytes, score) and hold only those while they find the cut; each model's sum_logprob is read
-- again here for the kept units, the kept keys hashed and the two models' scores streamed past
-- them. Holding both log-likelihoods beside every unit's key through the ranking cost 16 bytes a
-- unit of peak memory (0.8 GB at 50M units), while DuckDB also held a hash table of each model's
-- scores. Every kept unit has both scores (its score is not NULL), so the joins are inner joins.
-- The caller materializes the result, so that DuckDB hashes the kept keys, not the documents'
-- rows that join them afterwards.
create or replace macro difference_kept(kept, teacher, reference) as table
with final as (
    select k.*, t.sum_logprob as teacher_logprob, r.sum_logprob as reference_logprob
    from query_table(kept) as k
    inner join (select doc_id, sum_logprob from scores where model = teacher) as t on k.unit_id = t.doc_id
    inner join (select doc_id, sum_logprob from scores where model = reference) as r on k.unit_id = r.doc_id
)

select * from final;
