"""The tenant dashboard's pages, one module per page family (translate, runs, profile, usage,
connect). Views stay thin: they parse the form, call a service or selector and render."""
