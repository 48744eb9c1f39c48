"""Protocol specs: the built-in L3/L4 ones (``l3l4``) and their registration as a built-in
plugin (``builtin``). Application protocols (HTTP, MQTT, ...) come from plugin packages."""
