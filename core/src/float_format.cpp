#include "gpe/float_format.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <system_error>

namespace gpe {

std::string python_repr(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";

    // Shortest round-trip digits in scientific form, e.g. "-1.2345e+05".
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
    std::string_view sci(buf, static_cast<size_t>(end - buf));
    const bool negative = sci.front() == '-';
    if (negative) sci.remove_prefix(1);
    const size_t e_pos = sci.find('e');
    std::string digits;
    digits.reserve(20);
    for (char c : sci.substr(0, e_pos)) {
        if (c != '.') digits.push_back(c);
    }
    int exponent = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());

    std::string out;
    out.reserve(32);
    if (negative) out.push_back('-');
    if (exponent >= -4 && exponent < 16) {
        // Fixed notation (Python's repr uses it for -4 <= exp < 16).
        if (exponent < 0) {
            out += "0.";
            out.append(static_cast<size_t>(-exponent - 1), '0');
            out += digits;
        } else {
            const size_t int_digits = static_cast<size_t>(exponent) + 1;
            if (digits.size() <= int_digits) {
                out += digits;
                out.append(int_digits - digits.size(), '0');
                out += ".0";
            } else {
                out.append(digits, 0, int_digits);
                out.push_back('.');
                out.append(digits, int_digits);
            }
        }
    } else {
        out.push_back(digits[0]);
        if (digits.size() > 1) {
            out.push_back('.');
            out.append(digits, 1);
        }
        out.push_back('e');
        out.push_back(exponent < 0 ? '-' : '+');
        const int magnitude = std::abs(exponent);
        if (magnitude < 10) out.push_back('0');
        out += std::to_string(magnitude);
    }
    return out;
}

void append_go_float(std::string& out, double value) {
    if (std::isinf(value)) {
        out += value > 0 ? "+Inf" : "-Inf";
        return;
    }
    if (std::isnan(value)) {
        out += "NaN";
        return;
    }
    // Integers are by far the most common sample values: print them without
    // the general algorithm ("12.0" is what repr gives for 12).
    if (value >= -1e15 && value <= 999999.0 && value == std::trunc(value)) {
        if (value == 0.0) {
            out += std::signbit(value) ? "-0.0" : "0.0";
            return;
        }
        char buf[32];
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(value));
        out.append(buf, end);
        out += ".0";
        return;
    }
    const std::string s = python_repr(value);
    const size_t dot = s.find('.');
    if (value > 0 && dot != std::string::npos && dot > 6) {
        // f'{s[0]}.{s[1:dot]}{s[dot + 1:]}'.rstrip('0.') + f'e+{dot - 1:02d}'
        std::string mantissa;
        mantissa.reserve(s.size());
        mantissa.push_back(s[0]);
        mantissa.push_back('.');
        mantissa.append(s, 1, dot - 1);
        mantissa.append(s, dot + 1);
        while (!mantissa.empty() && (mantissa.back() == '0' || mantissa.back() == '.')) {
            mantissa.pop_back();
        }
        out += mantissa;
        out += "e+";
        if (dot - 1 < 10) out.push_back('0');
        out += std::to_string(dot - 1);
        return;
    }
    out += s;
}

std::string go_float(double value) {
    std::string out;
    append_go_float(out, value);
    return out;
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (x != b[i]) return false;
    }
    return true;
}

}  // namespace

std::optional<double> parse_python_float(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    if (text.empty()) return std::nullopt;
    bool negative = false;
    std::string_view body = text;
    if (body.front() == '+' || body.front() == '-') {
        negative = body.front() == '-';
        body.remove_prefix(1);
    }
    if (iequals(body, "inf") || iequals(body, "infinity")) {
        return negative ? -HUGE_VAL : HUGE_VAL;
    }
    if (iequals(body, "nan")) return std::nan("");
    double value = 0;
    auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), value);
    if (ec != std::errc() || ptr != body.data() + body.size()) return std::nullopt;
    return negative ? -value : value;
}

}  // namespace gpe
