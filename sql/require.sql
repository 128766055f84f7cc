-- purpose: a policy's argument check: true when the condition holds, else an error with the message (DuckDB error())
-- depends:
-- params: condition (boolean; NULL counts as false), message (what is wrong and what to pass instead)
-- Policies put their checks in a one-row `checks` CTE that `final` filters on, so a misspelled
-- score name or alpha = 1.5 fails in any DuckDB shell instead of returning nothing or everything.
create or replace macro require(condition, message) as (
    case when coalesce(condition, false) then true else error(coalesce(message, 'a policy argument is NULL')) end
);
