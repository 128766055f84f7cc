-- purpose: a policy's check that a score name scored the unit its docs hold (documents or instances)
-- depends: require, unit_of
-- params: policy (its name, for the message), model (a score name, or NULL: nothing to check), docs
-- Scores of instances are keyed by instance_id, and a document that is one instance keeps its
-- doc_id as instance_id, so a join across units would silently match those documents only.
create or replace macro require_unit(policy, model, docs) as (
    require(
        model is null or unit_of(docs) is null
        or coalesce((select any_value(m.unit) from models as m where m.model = model), unit_of(docs)) = unit_of(docs),
        policy || ': ''' || model || ''' scored '
        || coalesce((select any_value(m.unit) from models as m where m.model = model), '?') || ' but docs holds '
        || coalesce(unit_of(docs), '?') || '; pass docs := '''
        || coalesce((select any_value(m.unit) from models as m where m.model = model), 'documents')
        || ''' (or a view over it), or score that unit (corpusdb score --unit)'
    )
);
