-- purpose: the command that scores what a score name is missing over docs (for policies' coverage errors)
-- depends:
-- params: score_name; docs (the view its units come from)
-- A re-run of `corpusdb score` under the same name scores only the units without a committed score.
create or replace macro score_command(score_name, docs) as (
    '`corpusdb score DB --model ' || coalesce((select any_value(m.path) from models as m where m.model = score_name), 'MODEL')
    || ' --as ' || score_name || ' --view ' || docs
    || case when (select any_value(m.unit) from models as m where m.model = score_name) = 'instances' then ' --unit instances' else '' end
    || '`'
);
