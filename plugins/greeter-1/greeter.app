%% The greeter library application, version 1: one library module, no processes.
{application, greeter,
 [{description, "Example library application: a typed Greeter interface"},
  {vsn, "1"},
  {modules, [greeter]},
  {applications, []}]}.
