// Command crackle-otelcol is an OpenTelemetry Collector distribution with exactly the
// components crackle-otel's collector_config/ files use. Test infrastructure only:
// tools/build_test_infra.sh builds it; the Python package never depends on it.
package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/otelcol"
)

// version is the collector core release the distribution is built from (go.mod: core v0.161.0 with
// its v1.67.0 modules and contrib v0.161.0, the newest release whose load-balancing exporter the Go
// module proxy serves).
const version = "0.161.0"

func main() {
	settings := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "crackle-otelcol",
			Description: "OpenTelemetry Collector with the components crackle-otel's collector_config uses",
			Version:     version,
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					fileprovider.NewFactory(),
					envprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
			},
		},
	}
	if err := otelcol.NewCommand(settings).Execute(); err != nil {
		log.Fatal(err)
	}
}
