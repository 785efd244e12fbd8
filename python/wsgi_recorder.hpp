// The Python binding of the WSGI app's wrapper (WSGIRecorder).
#pragma once

#include <nanobind/nanobind.h>

// Binds WSGIRecorder and the per-request types it hands out.
void bind_wsgi_recorder(nanobind::module_& m);
