"""Each cut policy as a distributed plan: what a task computes over its parts, the rule and threshold of the cut,
the driver's checks, and the columns and order of the result, all in the policy's own SQL.

    python -c "from corpusdb.distributed.plans import plan_for; from corpusdb.distributed.calls import read_call; print(plan_for(read_call(\\"difference('t', 'r')\\")).threshold)"

The row filters (`filter_source`, `filter_length`, `filter_loss`, on annotations `filter_language`,
`filter_quality`, `filter_decontaminated`, and on the MinHash clusters `dedup`) have no cut and no order: every unit a
task keeps is kept (rule "all" over one group); each macro's checks are a macro of their own (`sql/NAME_checks.sql`),
which the driver runs on the summed counts. `filter_classifier` is a cut where it has an `alpha` (the top of the annotation's values), with its
bounds applied to the kept rows.

A task's units are the policy's own key relation (`difference_units`, `quota_units`) over the
documents of its parts; its keys are (`__grp`, `__k`, `__u`, `__w`): the group the policy ranks
within (NULL, or the source), the order key ascending (a descending score negated), the unit id,
and the weight. The threshold of each group is computed by DuckDB from the user's own argument SQL
and the group's totals, as the macro computes it (so `alpha := 0.3` stays a DECIMAL). The checks
are the macro's: the checks of its key relation on an empty documents relation, its shared check
macros (`difference_coverage`, `quota_checks`, `curriculum_checks`, `curriculum_coverage`) on the
tasks' summed counts; the few a macro writes inline (alpha, temperature, alphas and their
sources) are restated here in its words. tests/test_distributed.py compares every error with the
single-process one, word for word.

Each unit is one row of its relation: `documents` refuses a repeated doc_id, and `corpusdb instances` ids each instance
by a 64-bit hash of its document and span. (A macro ranks a unit its docs repeat once and gives each of its rows that
rank; a plan would rank each row. `register_parts` refuses spans that repeat an instance_id among the parts it
registers; a repeat of one the database holds already is not looked for.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corpusdb.distributed.calls import Call

POLICIES = ("difference", "difference_bytes", "difference_sampled", "difference_by_source", "quota", "mixture", "curriculum",
            "filter_source", "filter_length", "filter_loss", "filter_language", "filter_quality", "filter_decontaminated",
            "filter_classifier", "dedup")
NO_DOCUMENTS = "corpusdb_no_documents"  # the documents relation, empty: where the driver runs the argument checks
UNITS, KEPT = "corpusdb_units", "corpusdb_kept"
INTERNAL = ("__grp", "__k", "__u", "__w")


@dataclass(frozen=True)
class Plan:
    """A policy call as tasks and a driver run it (plain strings and lists: it travels to Ray tasks)."""

    call: str
    units: str  # SQL of every unit of {docs} (a task's documents), with what the checks count (kept as table UNITS)
    counts: str  # SQL over UNITS: no_teacher, no_reference, no_either, units (what the coverage check counts), sources
    keys: str  # SQL over UNITS: __grp, __k, __u, __w and the carried columns, for the units it ranks
    carried: list[str]  # columns of the keys that the result carries
    rule: str  # "before" or "through" (corpusdb.distributed.radix), or "all" (no cut: an order only)
    threshold: str  # SQL of a group's threshold, with {group}, {count} and {weight}
    checks: list[str]  # SQL boolean expressions the driver evaluates, with {no_teacher} ... {sources}
    rows: str  # SQL of the result rows of KEPT joined to the documents (no rank columns), with {columns} (theirs),
    #   {documents} (the relation) and {place} (columns of its own to carry, each followed by a comma)
    ranks: list[str] = field(default_factory=list)  # SQL of the numbering columns over one range in order, each
    #   added over the last ({offset}: the count, or weight, before the range; {total}: the kept units)
    rank_by: str = "count"  # what {offset} counts: "count" or "weight" of the kept units before the range
    numbering: str = "group"  # numbers restart with each group ("group") or run on across them ("global")
    join: list[str] = field(default_factory=lambda: ["unit_id", "n_bytes"])
    docs: str = "documents"  # what it ranks: "documents" or "instances" (a task's own, from its documents parts)
    key_column: str = ""  # a column of the units in its own type, which `keys` reads as {key_cast}: cast by the driver
    ordered: bool = False  # its rows in the order of the keys, in ranges, with no numbering (an ordered view)


def _alpha_check(name: str, alpha: str) -> str:
    return f"require({alpha} > 0 and {alpha} <= 1, '{name}: alpha must be in (0, 1], not ' || coalesce(({alpha})::varchar, 'NULL'))"


def _sources_check(name: str, names: str, docs: str) -> str:
    """A source the call names that the documents do not hold: the macros' own message."""
    return (f"require(coalesce(list_bool_and(list_transform({names}, lambda s: list_contains({{sources}}, s))), true), "
            f"'{name}: no units of source(s) ' || list_filter({names}, lambda s: not list_contains({{sources}}, s))::varchar "
            f"|| ' in ''' || {docs} || '''; sources: ' || {{sources}}::varchar)")


def _difference(call: Call) -> Plan:
    a = call.args
    name, alpha = call.name, a["alpha"]
    units = f"select * from difference_units({a['teacher']}, {a['reference']}, per := {a['per']}, docs := '{{docs}}')"
    counts = (f"select count(*) filter (where not has_teacher) as no_teacher, count(*) filter (where not has_reference) "
              f"as no_reference, count(*) filter (where not (has_teacher and has_reference)) as no_either, count(*) as units, "
              f"list(distinct source) as sources from {UNITS}")
    carried = ["n_bytes", "teacher_logprob", "reference_logprob", "score"]
    group, weight, key, rank, threshold = "null::varchar", "1::bigint", "-score", None, \
        f"least(ceil(least(greatest({alpha}, 0), 1) * {{count}}::bigint), {{count}}::bigint)::bigint"
    checks = [_alpha_check(name, alpha)]
    if name == "difference_bytes":
        weight, threshold = "n_bytes", f"{alpha} * {{weight}}::hugeint"
    elif name == "difference_sampled":
        carried.append("sample_key")
        key, rank, threshold = "-sample_key", "sample_rank", f"ceil({alpha} * {{count}}::bigint)"
        t = a["temperature"]
        checks.append(f"require({t} > 0, 'difference_sampled: temperature must be positive, not ' || "
                      f"coalesce(({t})::varchar, 'NULL') || ' (as it goes to 0 this becomes difference(...))')")
    elif name == "difference_by_source":
        group, rank = "source", "difference_rank"
        threshold = f"ceil(coalesce(({a['alphas']})[{{group}}], {alpha}) * {{count}}::bigint)"
        checks += [(f"require(coalesce(list_bool_and(list_transform(map_values({a['alphas']}), lambda a: a > 0 and a <= 1)), "
                    f"true), 'difference_by_source: every value of alphas must be in (0, 1], not ' || ({a['alphas']})::varchar)"),
                   _sources_check(name, f"map_keys({a['alphas']})", a["docs"])]
    checks.append(f"difference_coverage('{name}', {a['teacher']}, {a['reference']}, {a['missing']}, {{no_teacher}}, "
                  f"{{no_reference}}, {{no_either}}, {{units}}, {a['docs']})")
    sample = ("score / " + a["temperature"] + f" - ln(-ln(uniform(unit_id, {a['seed']}))) as sample_key, "
              if name == "difference_sampled" else "")
    keys = (f"select {group} as __grp, {key} as __k, unit_id as __u, {weight} as __w, {', '.join(carried)} "
            f"from (select *, {sample}from {UNITS} where score is not null)")
    extra = ", ".join(f"{KEPT}.{c}" for c in carried if c != "n_bytes")
    return Plan(call.sql(), units, counts, keys, carried, "before", threshold, checks,
                rows_sql(extra), ranks=[f"row_number() over (order by __k, __u) + {{offset}} as {rank}"] if rank else [])


def _quota(call: Call) -> Plan:
    a = call.args
    policy = a.get("policy", "'mixture'")
    budgets, checks = a.get("budgets"), []
    if call.name == "mixture":  # mixture's budgets, as mixture.sql hands them to quota
        w, total = a["weights"], a["total"]
        budgets = (f"map_from_entries(list_transform(map_entries({w}), lambda entry: {{'key': entry.key, 'value': "
                   f"{total} * entry.value / list_sum(map_values({w}))}}))")
        checks += [(f"require(len(map_keys({w})) > 0 and list_bool_and(list_transform(map_values({w}), lambda w: w > 0)), "
                    f"'mixture: every weight must be positive, not ' || ({w})::varchar)"),
                   f"require({total} > 0, 'mixture: total must be positive, not ' || coalesce(({total})::varchar, 'NULL'))"]
    units = (f"select * from quota_units({budgets}, unit := {a['unit']}, model := {a['model']}, docs := '{{docs}}', "
             f"policy := {policy})")
    counts = (f"select 0 as no_teacher, 0 as no_reference, count(*) filter (where unjudged and quota_budget is not null) "
              f"as no_either, count(*) filter (where quota_budget is not null) as units, list(distinct source) as sources "
              f"from {UNITS}")
    checks += [(f"quota_checks({budgets}, {a['unit']}, {a['model']}, {a['docs']}, {a['missing']}, {policy}, "
                "{sources}, {no_either}, {units})")]
    keys = (f"select source as __grp, uniform(unit_id, {a['seed']}) as __k, unit_id as __u, quota_units as __w, n_bytes, "
            f"source, quota_units from {UNITS} where quota_budget is not null and quota_units is not null")
    return Plan(call.sql(), units, counts, keys, ["n_bytes", "source", "quota_units"], "through", f"({budgets})[{{group}}]",
                checks, rows_sql(f"{KEPT}.quota_units"), ranks=[("sum(__w) over (order by __k, __u rows unbounded preceding) "
                                                               "+ {offset}::hugeint as quota_running")],
                rank_by="weight", join=["unit_id", "n_bytes", "source"])


LOSS_KEYS = ("'loss_per_byte'", "'loss_per_token'", "'bits_per_byte'")


# the types of a column a distributed curriculum orders by: each value exact as a double (64-bit integers checked)
EXACT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER", "FLOAT", "DOUBLE")
WIDE_TYPES = ("BIGINT", "UBIGINT")
SORT_KEY = "sort_key"  # the units' column a column-keyed curriculum orders by, in the column's own type


def _curriculum(call: Call) -> Plan:
    """Easy to hard by a model's loss or by a numeric column of the documents (or instances): no cut, one global order
    (groups: scored with a value, scored without, unscored). A column keeps its own type in the units; the driver
    casts it to the order key once it knows the type (`key_cast`)."""
    a = call.args
    by_loss = a["key"] in LOSS_KEYS and a["model"].lower() != "null"
    if by_loss:
        units = (f"select u.unit_id, u.n_bytes, l.doc_id is not null as scored, case {a['key']} when 'loss_per_token' then "
                 "l.loss_per_token when 'bits_per_byte' then l.bits_per_byte else l.loss_per_byte end as sort_key, "
                 f"l.loss_per_token, l.loss_per_byte from (select {UNIT_ID}, n_bytes from {{docs}}) as u "
                 f"left join model_losses({a['model']}) as l on u.unit_id = l.doc_id")
    else:  # the column named key among the documents' columns and the model's losses, as the macro finds it
        units = (f"select unit_id, n_bytes, true as scored, columns('^' || {a['key']} || '$') as {SORT_KEY}, loss_per_token, "
                 f"loss_per_byte from (select u.*, l.* exclude (doc_id) from (select columns(lambda c: c <> 'text'), "
                 f"{UNIT_ID} from {{docs}}) as u left join model_losses({a['model']}) as l on u.unit_id = l.doc_id)")
    counts = (f"select 0 as no_teacher, 0 as no_reference, count(*) filter (where not scored) as no_either, count(*) as units, "
              f"[]::varchar[] as sources from {UNITS}")
    keys = order_keys("sort_key" if by_loss else "{key_cast}", a["descending"],
                      ["n_bytes", "loss_per_token", "loss_per_byte"], f"scored or {a['missing']} <> 'exclude'")
    checks = [f"curriculum_checks({a['model']}, {a['key']}, {a['stages']}, {a['docs']})",
              f"curriculum_coverage({a['model']}, {a['missing']}, {{no_either}}, {{units}}, {a['docs']})"]
    per_stage, longer = f"({{total}}::bigint // {a['stages']})", f"({{total}}::bigint % {a['stages']})"
    stage = (f"case when curriculum_rank <= {longer} * ({per_stage} + 1) then (curriculum_rank - 1) // ({per_stage} + 1) + 1 "
             f"else {longer} + (curriculum_rank - 1 - {longer} * ({per_stage} + 1)) // {per_stage} + 1 end as stage")
    return Plan(call.sql(), units, counts, keys, ["n_bytes", "loss_per_token", "loss_per_byte"], "all", "null", checks,
                rows_sql(f"{KEPT}.loss_per_token, {KEPT}.loss_per_byte, {KEPT}.loss_per_byte / ln(2) as bits_per_byte"),
                ranks=["row_number() over (order by __k, __u) + {offset} as curriculum_rank", stage], numbering="global",
                key_column="" if by_loss else SORT_KEY)


def order_keys(value: str, descending: str, carried: list[str], keep: str = "true") -> str:
    """The keys of a global order of the units by `value` (SQL of their `sort_key`), `descending` (SQL) or not: group
    'a' the scored units with a value, 'b' the scored ones without (after them, by unit id), 'c' the unscored (last);
    the units of `keep` alone, with the `carried` columns."""
    return (f"select case when not scored then 'c' when sort_key is null then 'b' else 'a' end as __grp, "
            f"case when scored and sort_key is not null then case when {descending} then -{value} else {value} end "
            f"else 0.0 end as __k, unit_id as __u, 1::bigint as __w, {', '.join(carried)} from {UNITS} where {keep}")


FILTERS = ("filter_source", "filter_length", "filter_loss", "filter_language", "filter_quality", "filter_decontaminated",
           "dedup")
# the filters on a table of judgements keyed by doc_id (an annotation's view; `dedup`: the MinHash clusters), and the
# arguments of their checks macro (`sql/NAME_checks.sql`) before the counts
ANNOTATED = {"filter_language": ("annotations_language", ["langs", "min_score", "missing"]),
             "filter_quality": ("annotations_quality", ["rules", "chain", "c4_terminal_punct", "missing"]),
             "filter_decontaminated": ("annotations_decontamination", ["max_fraction", "missing"]),
             "dedup": ("minhash", ["missing"])}
UNIT_ID = "unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id"


def _filter(call: Call) -> Plan:
    """A row filter: no cut and no order (every unit it keeps is kept, `rule` "all" over one group); its checks on
    the tasks' summed counts; the rows are the documents' columns alone, as the macro returns them."""
    a, name = call.args, call.name
    checks: list[str] = []
    if name == "filter_source":
        wanted = a["sources"]
        checks.append(f"filter_source_checks({wanted}, {{sources}})")
        units = (f"select {UNIT_ID}, n_bytes, source, coalesce(list_contains({wanted}, source), false) as kept, "
                 "true as judged from {docs}")
    elif name == "filter_length":
        low, high = a["min_bytes"], a["max_bytes"]
        checks.append(f"filter_length_checks({low}, {high})")
        keep = f"coalesce(n_bytes >= {low} and n_bytes <= coalesce({high}, 9223372036854775807), false)"
        units = f"select {UNIT_ID}, n_bytes, source, {keep} as kept, true as judged from {{docs}}"
    elif name in ANNOTATED:
        # the macro itself keeps or drops each unit of the task's docs (missing := 'keep': its unjudged units too),
        # and its checks macro runs on the summed counts
        view, arguments = ANNOTATED[name]
        keep = call.sql(docs="'{docs}'", missing="'keep'")
        units = (f"select d.unit_id, d.n_bytes, d.source, d.judged, (d.judged or {a['missing']} = 'keep') and d.unit_id in "
                 f"(select unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) from {keep}) as kept from (select "
                 f"{UNIT_ID}, n_bytes, source, doc_id in (select doc_id from {view}) as judged from {{docs}}) as d")
        checks.append(f"{name}_checks({', '.join(a[x] for x in arguments)}, {{no_either}}, {{units}}, {a['docs']})")
    else:
        model, per, missing, docs = a["model"], a["per"], a["missing"], a["docs"]
        loss = (f"case {per} when 'byte' then -sum_logprob / nullif(n_bytes, 0) when 'token' then -sum_logprob / "
                "nullif(n_tokens, 0) end")
        low, high = f"coalesce({a['min_loss']}, '-infinity'::double)", f"coalesce({a['max_loss']}, 'infinity'::double)"
        units = (f"select d.unit_id, d.n_bytes, d.source, l.doc_id is not null as judged, coalesce((l.filter_loss >= {low} "
                 f"and l.filter_loss <= {high}) or (l.doc_id is null and {missing} = 'keep'), false) as kept from "
                 f"(select {UNIT_ID}, n_bytes, source from {{docs}}) as d left join (select doc_id, {loss} as filter_loss "
                 f"from scores where model = {model}) as l on d.unit_id = l.doc_id")
        checks.append(f"filter_loss_checks({model}, {per}, {a['min_loss']}, {a['max_loss']}, {missing}, {{no_either}}, "
                      f"{{units}}, {docs})")
    counts = (f"select 0 as no_teacher, 0 as no_reference, count(*) filter (where not judged) as no_either, count(*) as units, "
              f"list(distinct source) as sources from {UNITS}")
    keys = (f"select null::varchar as __grp, 0.0::double as __k, unit_id as __u, 1::bigint as __w, n_bytes from {UNITS} "
            "where kept")
    return Plan(call.sql(), units, counts, keys, ["n_bytes"], "all", "null", checks, rows_sql(""))


def _classifier(call: Call) -> Plan:
    """The top alpha of the annotation's values (group 'a': every unit with a value, by value descending, ties by unit
    id), the bounds applied to the kept rows (a unit outside them still takes its place in the top), and the unjudged
    units kept whole (group 'b', missing := 'keep'). Without alpha, group 'a' holds the units within the bounds and
    every one is kept: a filter."""
    a = call.args
    name, alpha, missing = a["name"], a["alpha"], a["missing"]
    low, high = f"coalesce({a['min_score']}, -1e308)", f"coalesce({a['max_score']}, 1e308)"
    units = (f"select d.unit_id, d.n_bytes, d.source, a.value, a.doc_id is not null as judged, coalesce(a.value >= {low} "
             f"and a.value <= {high}, true) as in_bounds from (select {UNIT_ID}, doc_id, n_bytes, source from {{docs}}) as d "
             f"left join (select doc_id, columns('^' || {a['key']} || '$')::double as value from query_table('annotations_' "
             f"|| {name})) as a on d.doc_id = a.doc_id")
    counts = (f"select 0 as no_teacher, 0 as no_reference, count(*) filter (where not judged) as no_either, count(*) as units, "
              f"list(distinct source) as sources from {UNITS}")
    keys = (f"select case when value is null then 'b' else 'a' end as __grp, coalesce(0.0 - value, 0.0) as __k, unit_id as __u, "
            f"1::bigint as __w, n_bytes, in_bounds from {UNITS} where (value is not null and ({alpha} is not null or "
            f"in_bounds)) or (not judged and {missing} = 'keep')")
    # a count above the group's: every unit is kept (the driver needs no pass)
    threshold = (f"case when {{group}} = 'a' and {alpha} is not null then ceil({alpha} * {{count}}::bigint) "
                 f"else {{count}}::bigint + 1 end")
    checks = [f"filter_classifier_checks({name}, {alpha}, {a['min_score']}, {a['max_score']}, {missing}, {{no_either}}, "
              f"{{units}}, {a['docs']})"]
    return Plan(call.sql(), units, counts, keys, ["n_bytes", "in_bounds"], "before", threshold, checks,
                rows_sql("", where=f"{KEPT}.in_bounds"))


def rows_sql(extra: str, where: str = "") -> str:
    """The result rows: {columns} of the documents `d` ({documents}: the task's, with {place} columns of theirs)."""
    return ("select {columns}, " + (extra + ", " if extra else "") + "__grp, __k, __u, __w from (select *, {place}"
            "unit_key(struct_pack(*columns('^(instance_id|doc_id)$'))) as unit_id from {documents}) as d "
            f"inner join {KEPT} on {{join}} " + (f"where {where} " if where else "") + "order by __grp nulls last, __k, __u")


def plan_for(call: Call) -> Plan:
    """The distributed plan of a policy call.

    Raises:
        ValueError: a policy without a distributed plan, or docs other than the documents table.
    """
    if call.name not in POLICIES:
        raise ValueError(f"{call.name} has no distributed plan (policies with one: {', '.join(POLICIES)}); "
                         "run it in one process (`corpusdb sql`, `corpusdb export` without --shards)")
    docs = {"'documents'": "documents", "'instances'": "instances"}.get(call.args.get("docs"))
    if docs is None:
        raise ValueError(f"{call.name}: a distributed selection ranks the documents or instances table, not docs := "
                         f"{call.args['docs']}; run it in one process (`corpusdb sql`, `corpusdb export` without --shards)")
    plan = (_quota(call) if call.name in ("quota", "mixture") else _curriculum(call) if call.name == "curriculum"
            else _filter(call) if call.name in FILTERS else _classifier(call) if call.name == "filter_classifier"
            else _difference(call))
    return over(plan, docs)


def over(plan: Plan, docs: str) -> Plan:
    """The plan over `docs` ("documents" or "instances"), its rows joined to its kept units on its `join` columns."""
    join = " and ".join(f"d.{c} = {KEPT}.{'__u' if c == 'unit_id' else c}" for c in plan.join)
    return Plan(**{**plan.__dict__, "rows": fill(plan.rows, join=join), "docs": docs})


def key_cast(plan: Plan, kind: str) -> Plan:
    """The plan with its `keys` reading `key_column`, of SQL type `kind`, as an exact double order key.

    Raises:
        ValueError: a type whose values a double does not hold exactly (text, dates, decimals, 128-bit integers).
    """
    column = plan.key_column
    subject = ("--shards: an ordered view exported by tasks orders by a numeric column" if plan.ordered else
               "curriculum: a distributed curriculum orders by a model's loss or a numeric column of docs")
    one = "export it without --shards" if plan.ordered else "run it in one process (`corpusdb sql`, `corpusdb export` without --shards)"
    if kind in EXACT_TYPES:
        cast = f"{column}::double"
    elif kind in WIDE_TYPES:  # exact up to 2**53 (byte counts, token counts); beyond it, one process orders them
        message = f"{subject} whose values a double holds exactly; ".replace("'", "''")
        cast = (f"case when abs({column}::hugeint) <= 9007199254740992 then {column}::double else error('{message}' || "
                f"{column}::varchar || ' is beyond 2**53: {one}') end")
    else:
        raise ValueError(f"{subject}, not a {kind} column; {one}")
    return Plan(**{**plan.__dict__, "keys": fill(plan.keys, key_cast=cast), "key_column": ""})


def fill(template: str, **values: object) -> str:
    """`template` with each `{name}` replaced (str.format would read the braces of a struct literal in the SQL)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template
