#include "gpe/series_key.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

#include "gpe/strings.hpp"

namespace gpe {
namespace {

TEST(SeriesKey, EncodesLikeJsonDumpsWithSortedKeys) {
    EXPECT_EQ(
        encode_series_key("gunicorn_requests_total", "requests_total", {"status", "method"},
                          {"200", "GET"}, "Total number of requests"),
        R"(["gunicorn_requests_total", "requests_total", {"method": "GET", "status": "200"}, "Total number of requests"])");
    EXPECT_EQ(encode_series_key("m", "m", {}, {}, ""), R"(["m", "m", {}, ""])");
}

TEST(SeriesKey, EscapesLikeEnsureAscii) {
    // é (2 bytes), € (3 bytes), 😀 (surrogate pair), control and DEL characters.
    EXPECT_EQ(encode_series_key("m", "m", {"l"}, {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
                                "q\"\\\n\t\x01\x7f"),
              R"(["m", "m", {"l": "\u00e9\u20ac\ud83d\ude00"}, "q\"\\\n\t\u0001\u007f"])");
}

TEST(SeriesKey, RepeatedLabelNameKeepsLastValueLikeDict) {
    EXPECT_EQ(encode_series_key("m", "m", {"a", "a"}, {"1", "2"}, "h"),
              R"(["m", "m", {"a": "2"}, "h"])");
}

TEST(SeriesKey, RejectsInvalidUtf8) {
    EXPECT_THROW(encode_series_key("m", "m", {"a"}, {"\xff"}, ""), std::invalid_argument);
    EXPECT_THROW(encode_series_key("m", "m", {"a"}, {"\xe2\x82"}, ""), std::invalid_argument);
}

TEST(SeriesKey, DecodeRoundTripsAndSortsLabels) {
    const std::string key = encode_series_key("lat", "lat_bucket", {"path", "le"},
                                              {"/\xf0\x9f\x98\x80", "0.5"}, "help \"x\"");
    const SeriesKey parsed = decode_series_key(key);
    EXPECT_EQ(parsed.metric_name, "lat");
    EXPECT_EQ(parsed.sample_name, "lat_bucket");
    EXPECT_EQ(parsed.help, "help \"x\"");
    ASSERT_EQ(parsed.labels.size(), 2u);
    EXPECT_EQ(parsed.labels[0], (Label{"le", "0.5"}));
    EXPECT_EQ(parsed.labels[1], (Label{"path", "/\xf0\x9f\x98\x80"}));
}

TEST(SeriesKey, DecodeRejectsOtherShapes) {
    EXPECT_THROW(decode_series_key("not json"), std::invalid_argument);
    EXPECT_THROW(decode_series_key(R"(["m", "m", {}])"), std::invalid_argument);
    EXPECT_THROW(decode_series_key(R"(["m", "m", {"a": 1}, ""])"), std::invalid_argument);
    EXPECT_THROW(decode_series_key(R"({"m": 1})"), std::invalid_argument);
}

TEST(ValidUtf8, ReplacesInvalidBytesOnly) {
    EXPECT_EQ(valid_utf8("ok \xc3\xa9 \xf0\x9f\x98\x80"), "ok \xc3\xa9 \xf0\x9f\x98\x80");
    EXPECT_EQ(valid_utf8("a\xff"
                         "b\xe2\x82"),
              "a?b??");
    EXPECT_EQ(valid_utf8("\xed\xa0\x80"), "???");  // a UTF-16 surrogate
    EXPECT_EQ(valid_utf8("\xc0\xaf"), "??");       // overlong '/'
}

}  // namespace
}  // namespace gpe
