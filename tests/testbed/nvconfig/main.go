// nvconfig reads an NVIDIA device plugin config file the way the plugin itself does
// and says whether the plugin would accept it, for karpctl's tests (tests/it/validators.rs).
//
//	nvconfig FILE
//
// The file goes through NVIDIA's own entry point, api/config/v1.NewConfig, with a
// command line that sets only --config-file (so every setting comes from the file),
// then through DisableResourceNamingInConfig, as the plugin's start-up does. On top
// of that, and stricter than the plugin: a field the plugin's parser would silently
// ignore (unknown or misspelt) is an error, and so is a migStrategy outside the
// plugin's three. On success it prints one JSON object on stdout: the config as the
// plugin holds it, the sharing strategy it infers, and any warning the plugin would
// log (a setting it ignores). On failure it prints the parser's error on stderr
// and exits 1; a usage error exits 2.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	spec "github.com/NVIDIA/k8s-device-plugin/api/config/v1"
	cli "github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

// warnings collects what the plugin would log while it ignores parts of a config.
type warnings []string

func (w *warnings) Warning(args ...interface{}) { *w = append(*w, fmt.Sprint(args...)) }
func (w *warnings) Warningf(format string, args ...interface{}) {
	*w = append(*w, fmt.Sprintf(format, args...))
}

type result struct {
	Config          *spec.Config `json:"config"`
	SharingStrategy string       `json:"sharingStrategy"`
	Warnings        []string     `json:"warnings"`
}

func check(path string) (*result, error) {
	var cfg *spec.Config
	flags := []cli.Flag{&cli.StringFlag{Name: "config-file"}}
	app := &cli.App{
		Name:            "nvconfig",
		Flags:           flags,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			var err error
			cfg, err = spec.NewConfig(c, flags)
			return err
		},
	}
	if err := app.Run([]string{"nvconfig", "--config-file", path}); err != nil {
		return nil, err
	}
	w := warnings{}
	spec.DisableResourceNamingInConfig(&w, cfg)

	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(data, &spec.Config{}); err != nil {
		return nil, fmt.Errorf("fields the plugin would ignore: %v", err)
	}
	if m := cfg.Flags.MigStrategy; m != nil {
		switch *m {
		case spec.MigStrategyNone, spec.MigStrategySingle, spec.MigStrategyMixed:
		default:
			return nil, fmt.Errorf("unknown MIG strategy: %v", *m)
		}
	}
	return &result{Config: cfg, SharingStrategy: string(cfg.Sharing.SharingStrategy()), Warnings: w}, nil
}

func main() {
	if len(os.Args) != 2 || os.Args[1] == "" || os.Args[1][0] == '-' {
		fmt.Fprintln(os.Stderr, "usage: nvconfig FILE")
		os.Exit(2)
	}
	r, err := check(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "nvconfig: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	out, err := json.Marshal(r)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nvconfig: encoding the result: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
