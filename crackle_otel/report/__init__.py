"""What a person looks at: standing findings with their places in the input, plot data, the HTML report
(``crackle-otel analyze --report``) and the gateway's live page (``GET /patterns``).

``findings`` and ``evidence`` need only numpy; ``html`` and ``live`` draw with plotly.js from the
optional ``[report]`` extra.
"""
