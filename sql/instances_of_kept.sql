-- purpose: the instances of a policy's kept spans: the spans whose instance_id and n_bytes are a unit_id and n_bytes of kept, joined to their documents and cut, each with the rest of its kept row; what the policies that cut return over instances
-- depends: instances_of
-- params: kept (the name of a table, view or CTE with unit_id, n_bytes and one row per unit: the policy's kept units)
-- Each instance comes with its kept row's other columns (all but unit_id, n_bytes and source, after
-- n_bytes), so a policy returns these rows as they are: joining the instances back to its kept
-- rows hashed every kept row again (25M at 50M instances). Only the kept spans are joined to their
-- documents, and DuckDB hashes the spans and streams the documents' text past them: the spans are
-- materialised, so that DuckDB cannot join every span to its document before the kept units, and
-- filtered on ending at or after their start, which every span corpusdb writes does but DuckDB
-- estimates to keep a fifth of the rows; it hashes the side it estimates smaller, which would
-- otherwise be the documents whenever the kept spans outnumber them.
create or replace macro instances_of_kept(kept) as table
with kept_spans as materialized (
    select i.*, k.* exclude (unit_id, n_bytes)
    from instance_spans as i
    inner join (select columns(lambda c: c <> 'source') from query_table(kept)) as k
        on i.instance_id = k.unit_id and i.n_bytes = k.n_bytes
    where i.byte_end >= i.byte_start
),

final as (
    select * from instances_of('kept_spans')
)

select * from final;
