// deploy-check reads the deployment files the way Docker does, with no Docker engine:
//
//	deploy-check compose FILE [PROFILE...]  loads a compose file with compose-go (the loader
//	                                        of `docker compose config`: schema, interpolation
//	                                        with an empty environment, profiles) and prints
//	                                        the resolved project as JSON
//	deploy-check dockerfile FILE            parses a Dockerfile with BuildKit's parser and
//	                                        instruction checks (and its linter's rules) and
//	                                        prints its stages and any warning as JSON
//
// It exits 1, with the loader's or parser's message, when a file does not load. The
// pipeline's tests (tests/tests/deploy.rs) assert on the printed JSON.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: deploy-check compose FILE [PROFILE...] | deploy-check dockerfile FILE")
	}
	var out any
	var err error
	switch os.Args[1] {
	case "compose":
		out, err = compose(os.Args[2], os.Args[3:])
	case "dockerfile":
		out, err = dockerfile(os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "deploy-check: "+msg)
	os.Exit(1)
}

func compose(file string, profiles []string) (any, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	opts, err := cli.NewProjectOptions(
		[]string{abs},
		cli.WithName("deploy-check"),
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		// the defaults written in the file (${VAR:-default}), as on a machine without .env
		cli.WithEnv([]string{}),
		cli.WithInterpolation(true),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		return nil, err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	return project, nil
}

type stage struct {
	Name         string      `json:"name"`
	Base         string      `json:"base"`
	Instructions []string    `json:"instructions"`
	User         string      `json:"user"`
	Copies       []copyFrom  `json:"copies"`
	Runs         []string    `json:"runs"`
	Cmd          []string    `json:"cmd"`
	Entrypoint   []string    `json:"entrypoint"`
	Expose       []string    `json:"expose"`
	Env          [][2]string `json:"env"`
}

type copyFrom struct {
	From    string   `json:"from"`
	Sources []string `json:"sources"`
	Dest    string   `json:"dest"`
}

type warning struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
	Line    int    `json:"line"`
}

func dockerfile(file string) (any, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		return nil, err
	}
	var warnings []warning
	for _, w := range ast.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		warnings = append(warnings, warning{Rule: "parser", Message: w.Short, Line: line})
	}
	lint := linter.New(&linter.Config{
		ExperimentalAll: true,
		Warn: func(rule, _, _, msg string, loc []parser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			warnings = append(warnings, warning{Rule: rule, Message: msg, Line: line})
		},
	})
	stages, _, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		return nil, err
	}
	var out []stage
	for _, s := range stages {
		st := stage{Name: s.Name, Base: s.BaseName}
		for _, c := range s.Commands {
			st.Instructions = append(st.Instructions, strings.ToUpper(c.Name()))
			switch c := c.(type) {
			case *instructions.UserCommand:
				st.User = c.User
			case *instructions.CopyCommand:
				st.Copies = append(st.Copies, copyFrom{From: c.From, Sources: c.SourcePaths, Dest: c.DestPath})
			case *instructions.RunCommand:
				st.Runs = append(st.Runs, strings.Join(c.CmdLine, " "))
			case *instructions.CmdCommand:
				st.Cmd = c.CmdLine
			case *instructions.EntrypointCommand:
				st.Entrypoint = c.CmdLine
			case *instructions.ExposeCommand:
				st.Expose = append(st.Expose, c.Ports...)
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					st.Env = append(st.Env, [2]string{kv.Key, kv.Value})
				}
			}
		}
		out = append(out, st)
	}
	return map[string]any{"stages": out, "warnings": warnings}, nil
}
