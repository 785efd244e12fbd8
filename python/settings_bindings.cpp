// The settings table for ExporterConfig (config.py): one row per setting, and
// the table's parser, whose SettingError arrives as ValueError.
#include "settings_bindings.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>

#include <string>

#include "gpe/settings.hpp"

namespace nb = nanobind;
namespace settings = gpe::settings;

namespace {

const char* kind_name(settings::Kind kind) {
    switch (kind) {
        case settings::Kind::kBool:
            return "bool";
        case settings::Kind::kInteger:
            return "integer";
        case settings::Kind::kSeconds:
            return "seconds";
        case settings::Kind::kText:
            break;
    }
    return "text";
}

nb::list rows() {
    nb::list out;
    for (const settings::Setting& s : settings::table()) {
        nb::dict row;
        row["variable"] = std::string(s.variable);
        row["flag"] = std::string(s.flag);
        row["kind"] = kind_name(s.kind);
        row["default"] = std::string(s.fallback);
        row["help"] = std::string(s.help);
        row["section"] = std::string(s.section);
        out.append(row);
    }
    return out;
}

nb::object read_setting(const std::string& variable, std::optional<std::string> raw) {
    const settings::Setting* s = settings::find(variable);
    if (s == nullptr || s->variable != variable)
        throw std::invalid_argument("no setting named " + variable);
    return std::visit([](const auto& value) { return nb::cast(value); },
                      settings::parse(*s, raw, variable));
}

}  // namespace

void bind_settings(nb::module_& m) {
    m.def("settings", &rows,
          "The settings table: dicts of variable, flag (the agent's), kind, default, help, "
          "section.");
    m.def("read_setting", &read_setting, nb::arg("variable"), nb::arg("raw").none(),
          "The value of `raw` (None: unset, the default) as the table reads `variable`; "
          "ValueError naming the variable and the value when invalid.");
}
