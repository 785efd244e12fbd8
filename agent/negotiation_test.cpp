#include "negotiation.hpp"

#include <gtest/gtest.h>

#include <string>

namespace gpe::agent {
namespace {

TEST(Negotiation, TextWithoutHeaders) {
    EXPECT_EQ(negotiate("", ""), (Negotiated{Format::kText, false}));
}

TEST(Negotiation, PrometheusScrapeHeaderSelectsOpenMetrics) {
    // What Prometheus 2.x sends.
    const std::string accept =
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    EXPECT_EQ(negotiate(accept, ""), (Negotiated{Format::kOpenMetrics, false}));
    EXPECT_EQ(negotiate(accept, "gzip"), (Negotiated{Format::kOpenMetrics, true}));
}

TEST(Negotiation, TextIsCompressedToo) {
    EXPECT_EQ(negotiate("text/plain", "gzip, deflate, br"), (Negotiated{Format::kText, true}));
    EXPECT_EQ(negotiate("*/*", "x-gzip"), (Negotiated{Format::kText, true}));
}

TEST(Negotiation, GzipRefusedByQZero) {
    EXPECT_EQ(negotiate("", "gzip;q=0"), (Negotiated{Format::kText, false}));
    EXPECT_EQ(negotiate("", "gzip; q=0.000, br"), (Negotiated{Format::kText, false}));
    EXPECT_EQ(negotiate("", "GZIP;q=0.5"), (Negotiated{Format::kText, true}));
}

TEST(Negotiation, HeaderListsAreReadElementByElement) {
    EXPECT_TRUE(has_token("Keep-Alive, Upgrade", "upgrade"));
    EXPECT_FALSE(has_token("keep-alive-ish", "keep-alive"));
    EXPECT_EQ(trim(" \tgzip \t"), "gzip");
}

TEST(Negotiation, GzipAmongOtherEncodings) {
    EXPECT_EQ(negotiate("application/openmetrics-text", "deflate, gzip;q=1.0, br"),
              (Negotiated{Format::kOpenMetrics, true}));
    EXPECT_EQ(negotiate("application/openmetrics-text", "identity"),
              (Negotiated{Format::kOpenMetrics, false}));
}

TEST(Negotiation, AnyBytes) {
    const std::string junk("\0\xff\r\napplication/openmetrics-tex", 31);
    EXPECT_EQ(negotiate(junk, std::string("\0gzi", 4)), (Negotiated{Format::kText, false}));
}

}  // namespace
}  // namespace gpe::agent
