// Binds the settings table (gpe/settings.hpp), so that Python reads, checks
// and documents its settings as the agent does.
#pragma once

#include <nanobind/nanobind.h>

void bind_settings(nanobind::module_& m);
