"""normspec.docs: the generator of the spec documentation (docs/spec, docs/site)."""
