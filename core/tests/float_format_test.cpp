#include "gpe/float_format.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace gpe {
namespace {

TEST(PythonRepr, MatchesPythonForFixedAndScientificRanges) {
    EXPECT_EQ(python_repr(0.0), "0.0");
    EXPECT_EQ(python_repr(-0.0), "-0.0");
    EXPECT_EQ(python_repr(1.0), "1.0");
    EXPECT_EQ(python_repr(0.1), "0.1");
    EXPECT_EQ(python_repr(12.3), "12.3");
    EXPECT_EQ(python_repr(0.0001), "0.0001");
    EXPECT_EQ(python_repr(0.00001), "1e-05");
    EXPECT_EQ(python_repr(1.5e-7), "1.5e-07");
    EXPECT_EQ(python_repr(1e15), "1000000000000000.0");
    EXPECT_EQ(python_repr(1e16), "1e+16");
    EXPECT_EQ(python_repr(1.2345e22), "1.2345e+22");
    EXPECT_EQ(python_repr(-2.5e-300), "-2.5e-300");
    EXPECT_EQ(python_repr(123456789.125), "123456789.125");
    EXPECT_EQ(python_repr(std::numeric_limits<double>::max()), "1.7976931348623157e+308");
    EXPECT_EQ(python_repr(5e-324), "5e-324");
}

TEST(GoFloat, MatchesFloatToGoString) {
    EXPECT_EQ(go_float(HUGE_VAL), "+Inf");
    EXPECT_EQ(go_float(-HUGE_VAL), "-Inf");
    EXPECT_EQ(go_float(std::nan("")), "NaN");
    EXPECT_EQ(go_float(0.0), "0.0");
    EXPECT_EQ(go_float(-0.0), "-0.0");
    EXPECT_EQ(go_float(7.0), "7.0");
    EXPECT_EQ(go_float(-7.0), "-7.0");
    EXPECT_EQ(go_float(999999.0), "999999.0");
    EXPECT_EQ(go_float(1000000.0), "1e+06");
    EXPECT_EQ(go_float(1234567.0), "1.234567e+06");
    EXPECT_EQ(go_float(1234567.5), "1.2345675e+06");
    EXPECT_EQ(go_float(1e15), "1e+15");
    EXPECT_EQ(go_float(1e20), "1e+20");
    EXPECT_EQ(go_float(-1234567.0), "-1234567.0");
    EXPECT_EQ(go_float(0.005), "0.005");
    EXPECT_EQ(go_float(2.5), "2.5");
}

TEST(ParsePythonFloat, AcceptsWhatPrometheusClientWritesIntoLe) {
    EXPECT_EQ(parse_python_float("0.005"), 0.005);
    EXPECT_EQ(parse_python_float("+Inf"), HUGE_VAL);
    EXPECT_EQ(parse_python_float("-inf"), -HUGE_VAL);
    EXPECT_EQ(parse_python_float("1e+06"), 1e6);
    EXPECT_EQ(parse_python_float(" 2 "), 2.0);
    EXPECT_TRUE(std::isnan(*parse_python_float("NaN")));
    EXPECT_FALSE(parse_python_float("fast").has_value());
    EXPECT_FALSE(parse_python_float("").has_value());
    EXPECT_FALSE(parse_python_float("1.0x").has_value());
}

}  // namespace
}  // namespace gpe
