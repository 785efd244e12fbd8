#include "gpe/exposition.hpp"

#include <gtest/gtest.h>

namespace gpe {
namespace {

std::string escaped(std::string_view name, bool allow_colon) {
    std::string out;
    append_escaped_name(out, name, allow_colon);
    return out;
}

TEST(Escaping, NamesKeepLegacyCharactersAndReplaceOthersPerCodePoint) {
    EXPECT_EQ(escaped("http_requests:rate5m", true), "http_requests:rate5m");
    EXPECT_EQ(escaped("http_requests:rate5m", false), "http_requests_rate5m");
    EXPECT_EQ(escaped("9lives", true), "_lives");
    EXPECT_EQ(escaped("caf\xc3\xa9.x", true), "caf__x");  // é is one code point
    EXPECT_EQ(escaped("a\xf0\x9f\x98\x80"
                      "1",
                      false),
              "a_1");
}

TEST(Escaping, LabelValuesEscapeBackslashQuoteNewline) {
    EXPECT_EQ(render_labels({{"b", "x\"y"}, {"a", "1\\2\n3"}}), R"({a="1\\2\n3",b="x\"y"})");
    EXPECT_EQ(render_labels({}), "");
    EXPECT_EQ(render_labels({{"a", "1"}, {"a", "2"}}), R"({a="2"})");
}

}  // namespace
}  // namespace gpe
