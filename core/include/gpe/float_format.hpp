// Number formatting and parsing exactly as prometheus_client does it, so that
// our exposition is byte-identical to the Python reference.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gpe {

// Python's repr(float): shortest round-trip digits, fixed notation for
// decimal exponents in [-4, 16), otherwise "1.5e+16" style.
std::string python_repr(double value);

// prometheus_client.utils.floatToGoString: "+Inf", "-Inf", "NaN", repr(), and
// Go-style exponents for large positive numbers.
void append_go_float(std::string& out, double value);
std::string go_float(double value);

// Python's float(str) for the spellings prometheus_client writes into `le`
// labels ("0.5", "+Inf", "1e+06", ...). nullopt when it is not a number.
std::optional<double> parse_python_float(std::string_view text);

}  // namespace gpe
