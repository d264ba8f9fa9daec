"""Everything gpuid knows about NVIDIA's tools: the command lines it runs, pure parsers of their output.

``commands`` holds every command line gpuid runs in a pod. ``parse`` is the parsing
API (``parse_smi_xml``, ``parse_smi_list``, ``merge_mig``, ``duplicate_uuids``); the
other modules are its parts: ``document`` (finding and vetting the XML), ``fast`` and
``lexical`` (reading identity fields by position), ``xml`` (the full expat parser),
``fields`` (what is read, and where) and ``values`` (normalisation).
"""
