-- Deliberately broken: this file proves .dbtignore works. If dbt parsed it,
-- the ref below would fail compilation of the whole project.
select * from {{ ref('model_that_does_not_exist') }}
