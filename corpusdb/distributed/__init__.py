"""Selections past one machine: a policy computed as tasks over the parts, the same rows as one process.

    corpusdb select demo/db "difference('teacher', 'reference', alpha := 0.5)" out/refined --shards 4

- `calls`: a policy call read into its macro and each argument's SQL.
- `plans`: each policy as what a task computes, the rule and threshold of its cut, its checks and its rows.
- `orders`: a view ordering documents or instances by one column (`select * from documents order by n_bytes`) as a
  plan of ranges, for `corpusdb export VIEW --shards N`.
- `radix`: the exact cut from histograms, narrowed pass by pass (the driver's arithmetic).
- `tasks`: the tasks (keys, histogram, resolve, filter, rank, gather), each runnable anywhere from its arguments.
- `places`: a sharded export's plan from the same cut (`corpusdb export CALL --shards N`): the kept rows placed,
  cut into export parts by one plan task, written by the export's shards.
- `select`: the driver (`corpusdb.distributed.select.select(db, call, out, shards=, executor=)`); `docs/scaling.md`
  has the plan and its costs.
"""
