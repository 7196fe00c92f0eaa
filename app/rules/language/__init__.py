"""What a rule file means once checked (``spec``), its small languages (``expr``,
``reasons``, ``kinds``), the line-aware YAML reader (``yamlsrc``) and the checks that turn
YAML into spec values or problems with file, line and fix."""
