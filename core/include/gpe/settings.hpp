// The exporter's settings, declared once (as Gunicorn's `Setting` classes):
// each one's environment variable, agent flag, default, parser and help. The
// agent builds its flags, --help and environment reading from this table;
// Python's ExporterConfig reads it through the extension, so both accept and
// refuse the same values with the same words.
#pragma once

#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

namespace gpe::settings {

enum class Kind { kText, kBool, kInteger, kSeconds };

// A parsed value: text, boolean, whole number or seconds, as the kind says.
using Value = std::variant<std::string, bool, long long, double>;

// Checks (and may normalise) a text value; throws std::invalid_argument
// saying why it is refused, without the name (parse adds it).
using Check = std::string (*)(std::string_view raw);

struct Setting {
    std::string_view variable;  // "" when the agent's flag only
    std::string_view flag;      // "" when the environment only; a kBool flag takes no value
    Kind kind;
    std::string_view fallback;  // the default, as it would be written
    std::string_view help;      // one line, for --help
    std::string_view section;   // --help's heading
    long long low = 0;          // kInteger: the range; kSeconds: high is the most
    long long high = 0;
    Check check = nullptr;
    std::string_view metavar = "";
};

// An invalid value; what() names the variable (or flag) and the value.
class SettingError : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

std::span<const Setting> table();

// The row of an environment variable or of a flag ("--port"); nullptr if none.
const Setting* find(std::string_view variable_or_flag);

// `raw` as `setting` reads it (nullopt: not given, the default). Booleans are
// 1/0, true/false, yes/no, on/off in any case, empty false; a blank number or
// text is the default. Throws SettingError naming `name` and `raw`.
Value parse(const Setting& setting, std::optional<std::string_view> raw, std::string_view name);

// The agent's --help, from the table.
std::string usage();

}  // namespace gpe::settings
