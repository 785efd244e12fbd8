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
        families.append(nb::make_tuple(family.name, family.help, family.type, samples));
    }
    return families;
}
