#include "convert.hpp"

#include <nanobind/stl/string.h>

nb::list families_to_python(const gpe::MergeResult& result) {
    nb::list families;
    for (const gpe::MergedFamily& family : result.families) {
        nb::list samples;
        for (const gpe::MergedSample& sample : family.samples) {
            nb::list labels;
            for (const auto& [name, value] : result.label_sets->labels(sample.labels)) {
                labels.append(nb::make_tuple(name, value));
            }
            samples.append(nb::make_tuple((*result.names)[sample.name], labels, sample.value));
        }
        families.append(
            nb::make_tuple(family.name, family.help, std::string(gpe::name(family.type)), samples));
    }
    return families;
}

nb::tuple render_to_python(gpe::Source& source, bool openmetrics) {
    std::string body;
    gpe::Diagnostics diagnostics;
    {
        nb::gil_scoped_release release;
        body = source.render(openmetrics ? gpe::Format::kOpenMetrics : gpe::Format::kText,
                             diagnostics);
    }
    return nb::make_tuple(nb::bytes(body.data(), body.size()), diagnostics.warnings);
}
