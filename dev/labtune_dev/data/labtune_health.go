// labtune-health: reads JSON lines {"object": {...}, "lua": "...", "cel": {...}} and prints, per line,
// the object's kstatus result, its Argo CD health from the Lua script (when given) and its Flux
// health from the healthCheckExprs (when given).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type input struct {
	Object json.RawMessage                   `json:"object"`
	Lua    string                            `json:"lua"`
	CEL    *kustomize.HealthCheckExpressions `json:"cel"`
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type output struct {
	Kstatus health  `json:"kstatus"`
	ArgoCD  *health `json:"argocd,omitempty"`
	Flux    *health `json:"flux,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var line input
		if err := json.Unmarshal(in.Bytes(), &line); err != nil {
			fail(err)
		}
		// As the API server's JSON reaches a client: whole numbers are int64 (kstatus needs that).
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(line.Object); err != nil {
			fail(err)
		}
		result := output{Kstatus: kstatus(u)}
		if line.Lua != "" {
			h := argocd(u.Object, line.Lua)
			result.ArgoCD = &h
		}
		if line.CEL != nil {
			h := flux(u, line.CEL)
			result.Flux = &h
		}
		if err := out.Encode(result); err != nil {
			fail(err)
		}
	}
	if err := in.Err(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "labtune-health:", err)
	os.Exit(1)
}

func kstatus(u *unstructured.Unstructured) health {
	r, err := status.Compute(u)
	if err != nil {
		return health{Error: err.Error()}
	}
	return health{Status: r.Status.String(), Message: r.Message}
}

func flux(u *unstructured.Unstructured, exprs *kustomize.HealthCheckExpressions) health {
	evaluator, err := fluxcel.NewStatusEvaluator(exprs)
	if err != nil {
		return health{Error: err.Error()}
	}
	r, err := evaluator.Evaluate(context.Background(), u)
	if err != nil {
		return health{Error: err.Error()}
	}
	return health{Status: r.Status.String(), Message: r.Message}
}

// argocd runs a health script as Argo CD's util/lua does for a resource.customizations script:
// a fresh VM without the standard libraries but package, base and table (and a require-able os with
// time only, where Argo CD's safe os has time and date), `obj` converted from the object, a 1 s
// deadline, and the returned table's status and message.
func argocd(obj map[string]any, script string) health {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			return health{Error: err.Error()}
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{"time": func(l *lua.LState) int {
			l.Push(lua.LNumber(time.Now().Unix()))
			return 1
		}}))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return health{Error: err.Error()}
	}
	returned, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{Error: fmt.Sprintf("expect table output from Lua script, not %s", l.Get(-1).Type())}
	}
	code, _ := returned.RawGetString("status").(lua.LString)
	message, _ := returned.RawGetString("message").(lua.LString)
	switch code {
	case "Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing":
		return health{Status: string(code), Message: string(message)}
	}
	return health{Status: "Unknown", Message: "Lua returned an invalid health status"}
}

// toLua converts as Argo CD's decodeValue: objects to tables keyed by string, arrays to sequences
// (1-based), numbers to Lua numbers, null to nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}
