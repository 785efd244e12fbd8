// The one UTF-8 decoder and the escaping rule shared by the exposition
// formats and JSON.
#include "gpe/strings.hpp"

#include <gtest/gtest.h>

namespace gpe {
namespace {

TEST(DecodeUtf8, ReadsEachLengthOfSequence) {
    const struct {
        std::string_view text;
        uint32_t value;
        size_t length;
    } cases[] = {
        {"a", 'a', 1},
        {"\xc3\xa9", 0xE9, 2},               // é
        {"\xe2\x82\xac", 0x20AC, 3},         // €
        {"\xf0\x9f\x98\x80", 0x1F600, 4},    // 😀
        {"\xf4\x8f\xbf\xbfx", 0x10FFFF, 4},  // the last code point, then more text
    };
    for (const auto& c : cases) {
        const auto cp = decode_utf8(c.text);
        ASSERT_TRUE(cp.has_value()) << c.text;
        EXPECT_EQ(cp->value, c.value);
        EXPECT_EQ(cp->length, c.length);
        EXPECT_EQ(utf8_sequence_length(static_cast<unsigned char>(c.text[0])), c.length);
    }
}

TEST(DecodeUtf8, RefusesWhatPythonStringsCannotHold) {
    for (std::string_view text : {
             std::string_view("\x80"),              // a continuation byte first
             std::string_view("\xff"),              // no sequence starts so
             std::string_view("\xc3"),              // truncated
             std::string_view("\xe2\x82"),          // truncated
             std::string_view("\xc3("),             // a bad continuation byte
             std::string_view("\xc0\xaf"),          // overlong '/'
             std::string_view("\xe0\x80\xaf"),      // overlong '/'
             std::string_view("\xed\xa0\x80"),      // a surrogate
             std::string_view("\xf4\x90\x80\x80"),  // past U+10FFFF
         }) {
        EXPECT_FALSE(decode_utf8(text).has_value());
    }
    EXPECT_EQ(utf8_sequence_length(0x80), 0u);
    EXPECT_EQ(utf8_sequence_length(0xff), 0u);
}

TEST(ValidUtf8, ReplacesEachBadByteAndKeepsTheRest) {
    EXPECT_EQ(valid_utf8("ok \xc3\xa9"), "ok \xc3\xa9");
    EXPECT_EQ(valid_utf8("a\xffz"), "a?z");
    EXPECT_EQ(valid_utf8("\xe2\x82"), "??");
    EXPECT_EQ(valid_utf8("\xed\xa0\x80z"), "???z");
}

TEST(CommonEscape, BackslashNewlineAndQuotesWhenAsked) {
    EXPECT_EQ(common_escape('\\', false), "\\\\");
    EXPECT_EQ(common_escape('\n', false), "\\n");
    EXPECT_EQ(common_escape('"', true), "\\\"");
    EXPECT_EQ(common_escape('"', false), "");
    EXPECT_EQ(common_escape('a', true), "");
    EXPECT_EQ(common_escape('\t', true), "");
}

}  // namespace
}  // namespace gpe
