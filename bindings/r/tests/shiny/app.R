# A Shiny app (Shiny 1.7.4, which predates ExtendedTask) whose slow output is an async render:
# the 2-second computation runs in a mirai daemon and comes back as a promise, so this R
# process keeps serving other sessions meanwhile. Driven by ../shiny_browser.py.
library(shiny)
library(promises)
library(mirai)

# Two daemons for the whole app, stopped with it.
daemons(2)
onStop(function() daemons(0))

ui <- fluidPage(
  # Filled in once the session is live: the browser test waits for it.
  textOutput("ready"),
  actionButton("slow", "Start the 2-second task"),
  textOutput("slow_out"),
  actionButton("quick", "Quick answer"),
  textOutput("quick_out"),
  actionButton("fail", "Start a task that fails"),
  textOutput("fail_out")
)

server <- function(input, output, session) {
  output$ready <- renderText("session ready")

  output$slow_out <- renderText({
    req(input$slow > 0)
    n <- as.integer(input$slow)
    # on_daemon() in the result shows it was computed in a daemon, not in the app's process.
    as.promise(mirai({ Sys.sleep(2); sprintf("slow result %d (on daemon: %s)", n * 10L, mirai::on_daemon()) },
                     n = n)) %...>%
      paste("- delivered by a promise")
  })

  # Answers at once: no mirai, so it only needs the app's R process to be free.
  output$quick_out <- renderText({
    req(input$quick > 0)
    sprintf("quick answer %d", input$quick)
  })

  # The error raised in the daemon rejects the promise; Shiny shows its message in red.
  output$fail_out <- renderText({
    req(input$fail > 0)
    as.promise(mirai(stop("deliberate failure in the mirai"))) %...>%
      (function(value) paste("unexpected success:", value))
  })
}

shinyApp(ui, server)
