-- purpose: the instances of a policy's kept spans: the spans whose instance_id is a unit_id of kept, joined to their documents and cut; what difference and difference_bytes return over instances
-- depends: instances_of
-- params: kept (the name of a table, view or CTE with unit_id: the policy's kept units)
-- Only the kept spans are joined to their documents, and DuckDB hashes the spans and streams the
-- documents' text past them: the spans are materialised, so that DuckDB cannot join every span to
-- its document before the kept units, and filtered on ending at or after their start, which every
-- span corpusdb writes does but DuckDB estimates to keep a fifth of the rows; it hashes the side it
-- estimates smaller, which would otherwise be the documents whenever the kept spans outnumber them.
create or replace macro instances_of_kept(kept) as table
with kept_spans as materialized (
    select i.*
    from instance_spans as i
    semi join query_table(kept) as k on i.instance_id = k.unit_id
    where i.byte_end >= i.byte_start
),

final as (
    select * from instances_of('kept_spans')
)

select * from final;
